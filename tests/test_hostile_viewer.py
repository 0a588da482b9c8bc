"""Attack cases for the HTML viewer: class names and titles come from checkpoints, configs and
``.ditr`` bundles, so they are data, and data must never become markup or script.

The static checks run everywhere; the dynamic one runs the page's own script in node with a
stand-in DOM that records every element and text node and fails on any HTML sink.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from ditr.viz.viewer import viewer_payload, write_viewer

HOSTILE = [
    "<img src=x onerror=pwned()>",
    '"><svg onload=pwned()>',
    "'; pwned(); '",
    "</script><script>pwned()</script>",
    "<!--<script>pwned()</script>-->",
    "a & b &amp; c",
    "__TITLE__ __DATA__",
    "\u2028line\u2029break",
]
TITLE = "</title><script>pwned()</script> & </script>"
SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "document.writeln",
         "createContextualFragment")


def _page(tmp_path) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(HOSTILE)), 20)
    coord = rng.normal(size=(len(labels), 3)).astype(np.float32)
    path = write_viewer(tmp_path / "v.html", coord, labels, HOSTILE, title=TITLE)
    return path.read_text(encoding="utf-8"), labels


def _scripts(page: str) -> tuple[str, str]:
    data = page.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    code = page.split("<script>", 1)[1].split("</script>", 1)[0]
    return data, code


def test_script_uses_no_html_sink():
    from ditr.viz import viewer

    for sink in SINKS:
        assert sink not in viewer._PAGE, sink


def test_data_cannot_close_or_open_a_script_element(tmp_path):
    page, _ = _page(tmp_path)
    # exactly the page's own two script elements, and the data block survives intact
    assert page.lower().count("<script") == 2 and page.lower().count("</script") == 2
    assert "<!--" not in page and "pwned()</script>" not in page
    data, _ = _scripts(page)
    assert json.loads(data)["classes"][0]["name"] == HOSTILE[0]
    assert [c["name"] for c in json.loads(data)["classes"]] == HOSTILE
    assert json.loads(data)["title"] == TITLE
    # the <title> element holds escaped text only
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    assert title is not None and "<" not in title.group(1)


def test_payload_keeps_names_as_plain_data():
    labels = np.array([0, 1, 1, 5])
    payload = viewer_payload(np.zeros((4, 3), np.float32), labels, ["<b>x</b>", "y"], None)
    assert [c["name"] for c in payload["classes"]] == ["<b>x</b>", "y", "unlabelled"]


#: A stand-in DOM: elements and text nodes are recorded; any HTML sink throws (and is reported).
NODE_DOM = r"""
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const json = html.split('<script type="application/json" id="data">')[1].split("</script>")[0];
const code = html.split("<script>")[1].split("</script>")[0];
const report = {sinks: [], pwned: 0, texts: [], legend: [], title: null, styles: []};
global.pwned = () => { report.pwned++; };
function sink(name) { return function () { report.sinks.push(name); throw new Error("HTML sink " + name); }; }
class Node_ {
  constructor(tag) { this.tagName = tag; this.children = []; this.style = {}; this._text = ""; this.listeners = {}; }
  appendChild(c) { this.children.push(c); return c; }
  append(...cs) { cs.forEach(c => this.appendChild(typeof c === "string" ? new Text_(c) : c)); }
  addEventListener(type, fn) { this.listeners[type] = fn; }
  setAttribute(k, v) { this[k] = String(v); }
  querySelectorAll() { return []; }
  get textContent() { return this._text + this.children.map(c => c.textContent).join(""); }
  set textContent(v) { this._text = String(v); this.children = []; report.texts.push(this._text); }
  get firstChild() { return this.children[0]; }
  set innerHTML(v) { sink("innerHTML")(); }
  set outerHTML(v) { sink("outerHTML")(); }
  get insertAdjacentHTML() { return sink("insertAdjacentHTML"); }
}
class Text_ { constructor(s) { this.data = String(s); report.texts.push(this.data); }
  get textContent() { return this.data; } }
const gl = new Proxy({}, {get: (_, name) => {
  if (name === "getShaderParameter") return () => true;
  if (/^[A-Z_]+$/.test(name)) return 1;
  return () => ({});
}});
const els = {};
const byId = id => {
  if (!els[id]) {
    els[id] = new Node_("div");
    if (id === "data") els[id]._text = json;
    if (id === "view") { els[id].getContext = () => gl; els[id].clientWidth = 800; els[id].clientHeight = 600; }
    if (id === "size") els[id].value = "2";
  }
  return els[id];
};
global.document = {getElementById: byId, createElement: tag => new Node_(tag),
  createTextNode: s => new Text_(s), querySelectorAll: () => [], body: new Node_("body"),
  get write() { return sink("document.write"); }, get writeln() { return sink("document.writeln"); },
  set title(v) { report.title = String(v); }};
global.window = {addEventListener() {}, devicePixelRatio: 1};
global.atob = s => Buffer.from(s, "base64").toString("binary");
try { eval(code); } catch (e) { report.error = String(e); }
report.legend = byId("legend").children.map(row => row.textContent);
const background = c => (c.style && c.style.background) || "";
report.styles = byId("legend").children.map(row => row.children.map(background).join(""));
report.panelTitle = byId("title").textContent;
console.log(JSON.stringify(report));
"""


def test_hostile_names_run_nothing_in_the_page_script(tmp_path):
    page, labels = _page(tmp_path)
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the viewer's script was not executed")
    (tmp_path / "dom.js").write_text(NODE_DOM)
    run = subprocess.run(["node", str(tmp_path / "dom.js"), str(tmp_path / "v.html")], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report.get("error") is None, report["error"]
    assert report["sinks"] == [] and report["pwned"] == 0
    # every hostile name is shown, as text, verbatim
    for name, row in zip(HOSTILE, report["legend"]):
        assert row.startswith(name) and "(20)" in row
    assert len(report["legend"]) == len(HOSTILE)
    assert all(name in report["texts"] or any(t.startswith(name) for t in report["texts"]) for name in HOSTILE)
    assert report["panelTitle"] == TITLE and report["title"] == TITLE
    assert all(re.fullmatch(r"rgb\(\d+,\d+,\d+\)", s) for s in report["styles"])
