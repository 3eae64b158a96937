"""The subject-ownership diagram (Mermaid) of the preview report and `eventbus plan --mermaid`.

Diagrams are checked with the real mermaid parser (tests/mermaid_parser.py). The
rendered reports in tests/fixtures/reports are what the committed previews in
tests/fixtures/previews render today, so they cannot go stale.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from components.cli import preview_report as pr
from components.cli.main import main
from components.jetstream.client import JetStream
from components.spec.stack import parse_stack_config
from tests import harness
from tests.capture_previews import load
from tests.harness import NatsServer, PulumiProject
from tests.mermaid_parser import parse_mermaid

REPORTS = Path(__file__).parent / "fixtures" / "reports"
LEGACY, CORE, VENDOR = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT"
OURA = "normalize-oura"
STACK = parse_stack_config({"phase": 0, "natsUrl": "nats://unused:4222"})


def diagram_lines(markdown: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index("```mermaid")
    return lines[start + 1: lines.index("```", start)]


def test_committed_report_fixtures_are_what_their_previews_render_today() -> None:
    reports = sorted(REPORTS.glob("*.md"))
    assert [r.stem for r in reports] == ["phase_0_to_1", "phase_2_to_1"]
    for report in reports:
        assert pr.render(load(report.stem), "staging").markdown == report.read_text(), report.name


def test_committed_report_fixture_diagrams_parse_as_mermaid_flowcharts() -> None:
    results = parse_mermaid(*sorted(REPORTS.glob("*.md")))
    assert [(Path(r["file"]).name, r["index"]) for r in results] == [("phase_0_to_1.md", 0), ("phase_2_to_1.md", 0)]
    assert all(r["ok"] and r["type"] == "flowchart-v2" for r in results), results


def test_mermaid_parser_given_a_broken_diagram_reports_the_parse_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mmd"
    broken.write_text('flowchart LR\n  s0["AA_CORE_HOT -->|"vendor.>"| s1\n')
    [result] = parse_mermaid(broken)
    assert not result["ok"] and "Parse error" in result["error"]


def test_render_phase_0_to_1_diagram_has_the_moving_subject_as_an_edge_to_the_new_stream() -> None:
    lines = diagram_lines(pr.render(load("phase_0_to_1"), "staging").markdown)
    assert lines[0] == "flowchart LR"
    assert '  s1["AA_VENDOR_HOT<br/>(new)"]' in lines
    assert '  s2["ATHLETE_ALLY_EVENTS<br/>keeps: athlete-ally.>, sleep.*"]' in lines
    assert '  s2 -->|"vendor.>"| s1' in lines
    assert "  class s1 new" in lines
    assert sum("-->" in line for line in lines) == 1, "only the moving subject is an edge"


def test_render_phase_2_to_1_diagram_moves_both_subjects_back_from_the_deleted_stream() -> None:
    lines = diagram_lines(pr.render(load("phase_2_to_1"), "staging").markdown)
    assert '  s0["AA_CORE_HOT<br/>(deleted)"]' in lines
    assert {'  s0 -->|"athlete-ally.>"| s3', '  s0 -->|"sleep.*"| s3'} <= set(lines)
    assert '  s3["ATHLETE_ALLY_EVENTS"]' in lines


def test_render_without_ownership_changes_has_no_diagram() -> None:
    assert "```mermaid" not in pr.render(load("no_change"), "staging").markdown
    assert "```mermaid" not in pr.render(load("phase_2_to_3_kept"), "staging").markdown


def test_ownership_mermaid_marks_kept_durables_unowned_subjects_and_quotes_then_parses(tmp_path: Path) -> None:
    own = pr.Ownership(
        before={"vendor.>": LEGACY, "new.>": None, 'odd"name': LEGACY},
        after={"vendor.>": VENDOR, "new.>": VENDOR, 'odd"name': None},
        created=frozenset({VENDOR}), kept=frozenset({(OURA, LEGACY)}))
    text = pr.ownership_mermaid(own)
    lines = text.splitlines()
    assert '  s0["AA_VENDOR_HOT<br/>(new)"]' in lines
    assert '  s1["ATHLETE_ALLY_EVENTS<br/>owns no subjects"]' in lines
    assert '  none(["(no stream)"])' in lines
    assert {'  none -->|"new.>"| s0', '  s1 -->|"odd#quot;name"| none', '  s1 -->|"vendor.>"| s0'} <= set(lines)
    assert '  k0(["normalize-oura<br/>kept until it drains"]) -.- s1' in lines
    assert "  class k0 kept" in lines
    assert pr.ownership_mermaid(own) == text, "the same ownership gives the same text"
    (tmp_path / "own.mmd").write_text(text)
    [result] = parse_mermaid(tmp_path / "own.mmd")
    assert result["ok"], result


@pytest.mark.pulumi
def test_preview_with_a_backlog_on_the_moving_durable_marks_it_kept_in_the_diagram(
        project: PulumiProject, js: JetStream, tmp_path: Path) -> None:
    project.up()
    for i in range(3):
        js.publish("vendor.oura.sleep", f"m{i}".encode())
    project.set("phase", 1)
    report = pr.render(project.preview_json("--show-sames"), project.stack)
    lines = diagram_lines(report.markdown)
    legacy = next(line.split("[")[0].strip() for line in lines if f'["{LEGACY}' in line)
    assert f'  k0(["{OURA}<br/>kept until it drains"]) -.- {legacy}' in lines
    (tmp_path / "report.md").write_text(report.markdown)
    [result] = parse_mermaid(tmp_path / "report.md")
    assert result["ok"], result


def test_plan_mermaid_with_a_backlog_prints_the_diagram_with_the_kept_durable(
        js: JetStream, nats_server: NatsServer, tmp_path: Path) -> None:
    harness.advance(js, 0, STACK)
    for i in range(4):
        js.publish("vendor.oura.sleep", f"m{i}".encode())
    result = CliRunner().invoke(main, ["--url", nats_server.url, "plan", "1", "--mermaid"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  s2 -->|"vendor.>"| s1' in lines and '  s1["AA_VENDOR_HOT<br/>(new)"]' in lines
    assert f'  k0(["{OURA}<br/>kept until it drains"]) -.- s2' in lines
    (tmp_path / "plan.mmd").write_text(result.stdout)
    [parsed] = parse_mermaid(tmp_path / "plan.mmd")
    assert parsed["ok"], parsed
