// Parses each Mermaid diagram given (files, or ```mermaid blocks inside Markdown files)
// with the real mermaid parser. mermaid expects a browser DOM (DOMPurify, d3), so jsdom
// provides one; parsing needs no layout or rendering, hence no browser.
// Prints one JSON line per diagram: {"file", "index", "ok", "type" | "error"}; exit 1 if any fails.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
for (const name of ["Element", "HTMLElement", "Node", "DOMParser", "SVGElement"]) {
  if (dom.window[name] && !(name in globalThis)) globalThis[name] = dom.window[name];
}

const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

function diagrams(file) {
  const text = readFileSync(file, "utf8");
  if (!file.endsWith(".md")) return [text];
  return [...text.matchAll(/^```mermaid\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

let failed = 0;
for (const file of process.argv.slice(2)) {
  const found = diagrams(file);
  if (found.length === 0) {
    failed += 1;
    console.log(JSON.stringify({ file, index: -1, ok: false, error: "no mermaid diagram found" }));
  }
  for (const [index, text] of found.entries()) {
    try {
      const result = await mermaid.parse(text);
      console.log(JSON.stringify({ file, index, ok: true, type: result.diagramType }));
    } catch (err) {
      failed += 1;
      console.log(JSON.stringify({ file, index, ok: false, error: String(err?.message ?? err) }));
    }
  }
}
process.exit(failed ? 1 : 0);
