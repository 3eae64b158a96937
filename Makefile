# The two commands:  make up   (embedded nats-server + pulumi up on staging)
#                    make test (lint, types, the whole test suite)
# Each does its own set-up first; running either again is quick and changes nothing.
SHELL := /bin/bash
VENV  := .venv
ACT   := source $(VENV)/bin/activate &&
STACK ?= staging

.PHONY: setup test-deps up down test lint unit preview drift preview-report bench clean

setup:
	@bash scripts/setup.sh

# What only the tests need: a PostgreSQL server (the shared-backend tests) and the
# mermaid parser (tests/mermaid, npm). Idempotent; quick when both are there.
test-deps: setup
	@bash scripts/test-deps.sh

up: setup
	@bash scripts/nats.sh start
	@$(ACT) pulumi stack select --create $(STACK) >/dev/null
	@$(ACT) pulumi up --yes --stack $(STACK) --skip-preview --suppress-progress
	@$(ACT) echo && eventbus --stack $(STACK) stream info

# Stops the embedded server, and this checkout's residents (toolchain/langhost/program.py).
down:
	@bash scripts/nats.sh stop
	@for pid in $$(pgrep -u "$$(id -u)" -x warm-resident); do \
	  [ "$$(readlink /proc/$$pid/cwd)" = "$$(pwd -P)" ] && kill "$$pid"; done; true

lint: setup
	@$(ACT) ruff check components tests toolchain benchmarks __main__.py
	@$(ACT) mypy
	@$(ACT) actionlint
	@$(ACT) yamllint .github/workflows .yamllint

test: lint test-deps
	@$(ACT) pytest -q

unit: setup
	@$(ACT) pytest -q -m "not pulumi and not cluster"

# The pull-request view of a change, and the scheduled drift check, run locally.
preview-report: setup
	@$(ACT) eventbus preview-report --stack $(STACK)

drift: setup
	@$(ACT) pulumi preview --refresh --expect-no-changes --stack $(STACK) --non-interactive

bench: setup
	@$(ACT) python benchmarks/preview_scale.py

clean: down
	rm -rf .pulumi-state .nats-data
