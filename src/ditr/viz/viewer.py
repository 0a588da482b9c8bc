"""A self-contained HTML viewer of labelled points: one file, no server, no libraries, no network.

The points (subsampled to ``max_points``, sorted by class) travel base64-encoded inside the page;
a few lines of WebGL draw them. Sorting by class lets the page hide a class by skipping its range
of the vertex buffer, so toggling classes costs nothing. Mouse: drag to orbit, right-drag or
shift-drag to pan, wheel to zoom; the legend toggles classes; colours switch between classes and
the scan's own RGB when it has one.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text
from .render import label_colors

#: Points embedded by default: about 8 MB of HTML, smooth in any browser.
MAX_POINTS = 300_000


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def viewer_payload(coord: np.ndarray, labels: np.ndarray, class_names: Sequence[str], rgb: np.ndarray | None,
                   max_points: int = MAX_POINTS, seed: int = 0) -> dict:
    """The page's data: centred float32 positions, class and RGB colours, per-class ranges."""
    n = len(coord)
    rng = np.random.default_rng(seed)
    keep = np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, replace=False))
    order = keep[np.argsort(labels[keep], kind="stable")]
    lab = labels[order]
    num_classes = len(class_names)
    centre = (coord.min(0) + coord.max(0)) / 2
    present = [int(c) for c in np.unique(lab)]
    starts = np.searchsorted(lab, present, side="left")
    ends = np.searchsorted(lab, present, side="right")
    palette = label_colors(np.arange(num_classes), num_classes)
    return {
        "count": int(len(order)), "total": int(n),
        "position": _b64((coord[order] - centre).astype("<f4")),
        "class_color": _b64(label_colors(lab, num_classes)),
        "rgb": None if rgb is None else _b64(np.asarray(rgb, np.uint8)[order]),
        "radius": float(np.linalg.norm(coord.max(0) - coord.min(0)) / 2),
        "classes": [{"id": c, "name": class_names[c] if 0 <= c < num_classes else "unlabelled",
                     "color": palette[c].tolist() if 0 <= c < num_classes else [153, 153, 153],
                     "start": int(s), "count": int(e - s)} for c, s, e in zip(present, starts, ends)],
    }


def write_viewer(path: str | Path, coord: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 rgb: np.ndarray | None = None, title: str = "ditr", max_points: int = MAX_POINTS) -> Path:
    """Write the viewer page for points ``coord`` (N, 3) with class ids ``labels`` (N,).

    Class names and the title are data (they come from checkpoints, configs and bundles): they
    reach the page only as escaped text (the ``<title>``) and inside the JSON block, from which
    the script builds every element with DOM text APIs.
    """
    payload = viewer_payload(coord, labels, class_names, rgb, max_points)
    payload["title"] = str(title)
    parts = {"__TITLE__": html.escape(str(title), quote=True), "__DATA__": script_json(payload)}
    page = re.sub(r"__TITLE__|__DATA__", lambda m: parts[m.group(0)], _PAGE)  # one pass: no text is re-read
    return atomic_write_text(path, page)


def script_json(value: object) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` at all (they are
    written as ``\\u003c`` etc., which ``JSON.parse`` reads back unchanged), so data can neither close
    the element (``</script>``) nor switch the HTML parser's script states (``<!--``, ``<script``)."""
    text = json.dumps(value, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body{margin:0;overflow:hidden;font:13px sans-serif;background:#fff}
 canvas{display:block;width:100vw;height:100vh}
 #panel{position:absolute;top:8px;left:8px;background:rgba(255,255,255,.88);padding:8px 10px;
   border-radius:6px;max-height:90vh;overflow:auto;box-shadow:0 1px 4px rgba(0,0,0,.3)}
 #panel label{display:block;white-space:nowrap;cursor:pointer}
 .sw{display:inline-block;width:12px;height:12px;margin:0 5px -2px 3px;border:1px solid #555}
 #help{color:#555;margin-top:6px}
</style></head><body>
<canvas id="view"></canvas>
<div id="panel"><b id="title"></b><div id="stats"></div>
 <div><label><input type="radio" name="mode" value="class" checked> class colours</label>
 <label id="rgbmode"><input type="radio" name="mode" value="rgb"> scan colours</label></div>
 <div>point size <input id="size" type="range" min="1" max="8" step="0.5" value="2"></div>
 <div><button id="all">all</button> <button id="none">none</button></div>
 <div id="legend"></div>
 <div id="help">drag: orbit &middot; right/shift-drag: pan &middot; wheel: zoom</div></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
function decode(b64, Type) {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  return new Type(bytes.buffer);
}
const canvas = document.getElementById("view");
const gl = canvas.getContext("webgl", {antialias: true});
if (!gl) { document.body.textContent = "This viewer needs WebGL."; throw new Error("no WebGL"); }
function shader(type, src) {
  const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
  return s;
}
const prog = gl.createProgram();
gl.attachShader(prog, shader(gl.VERTEX_SHADER,
  "attribute vec3 pos; attribute vec3 col; uniform mat4 mvp; uniform float size; varying vec3 c;" +
  "void main(){ gl_Position = mvp * vec4(pos, 1.0); gl_PointSize = size; c = col / 255.0; }"));
gl.attachShader(prog, shader(gl.FRAGMENT_SHADER,
  "precision mediump float; varying vec3 c; void main(){ gl_FragColor = vec4(c, 1.0); }"));
gl.linkProgram(prog); gl.useProgram(prog);
function buffer(array, name, size, type, normalized) {
  const b = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, b);
  gl.bufferData(gl.ARRAY_BUFFER, array, gl.STATIC_DRAW);
  const loc = gl.getAttribLocation(prog, name); gl.enableVertexAttribArray(loc);
  return () => { gl.bindBuffer(gl.ARRAY_BUFFER, b); gl.vertexAttribPointer(loc, size, type, normalized, 0, 0); };
}
const usePos = buffer(decode(data.position, Float32Array), "pos", 3, gl.FLOAT, false);
const useClass = buffer(decode(data.class_color, Uint8Array), "col", 3, gl.UNSIGNED_BYTE, false);
const useRgb = data.rgb ? buffer(decode(data.rgb, Uint8Array), "col", 3, gl.UNSIGNED_BYTE, false) : null;
if (!useRgb) document.getElementById("rgbmode").style.display = "none";
const visible = data.classes.map(() => true);
const legend = document.getElementById("legend");
// Every element below is built with DOM APIs; data (names, title) only ever becomes text.
document.title = data.title;
document.getElementById("title").textContent = data.title;
data.classes.forEach((c, i) => {
  const row = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox"; box.checked = true;
  box.addEventListener("change", e => { visible[i] = e.target.checked; draw(); });
  const swatch = document.createElement("span");
  swatch.className = "sw";
  const channel = v => Math.max(0, Math.min(255, Math.round(Number(v)) || 0));
  swatch.style.background = "rgb(" + c.color.map(channel).join(",") + ")";
  const text = document.createElement("span");
  text.textContent = String(c.name) + " (" + Number(c.count).toLocaleString() + ")";
  row.appendChild(box); row.appendChild(swatch); row.appendChild(text);
  legend.appendChild(row);
});
document.getElementById("stats").textContent = data.count.toLocaleString() + " of " +
  data.total.toLocaleString() + " points";
function setAll(v) { legend.querySelectorAll("input").forEach((b, i) => { b.checked = v; visible[i] = v; }); draw(); }
document.getElementById("all").onclick = () => setAll(true);
document.getElementById("none").onclick = () => setAll(false);
let mode = "class";
document.querySelectorAll("input[name=mode]").forEach(r =>
  r.addEventListener("change", e => { mode = e.target.value; draw(); }));
document.getElementById("size").addEventListener("input", draw);
// camera: orbit (yaw, pitch, distance) around a target, z up
const cam = {yaw: -0.6, pitch: 0.7, dist: 2.6 * data.radius, target: [0, 0, 0]};
function multiply(a, b) {
  const o = new Float32Array(16);
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) {
    let s = 0; for (let k = 0; k < 4; k++) s += a[k * 4 + j] * b[i * 4 + k]; o[i * 4 + j] = s;
  }
  return o;
}
function matrices() {
  const cp = Math.cos(cam.pitch), sp = Math.sin(cam.pitch), cy = Math.cos(cam.yaw), sy = Math.sin(cam.yaw);
  const eye = [cam.target[0] + cam.dist * cp * cy, cam.target[1] + cam.dist * cp * sy, cam.target[2] + cam.dist * sp];
  const f = cam.target.map((t, i) => t - eye[i]); const fl = Math.hypot(...f); f.forEach((v, i) => f[i] = v / fl);
  let r = [f[1], -f[0], 0]; const rl = Math.hypot(...r) || 1; r = r.map(v => v / rl);
  const u = [r[1] * f[2] - r[2] * f[1], r[2] * f[0] - r[0] * f[2], r[0] * f[1] - r[1] * f[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const view = new Float32Array([r[0], u[0], -f[0], 0, r[1], u[1], -f[1], 0, r[2], u[2], -f[2], 0,
                                 -dot(r, eye), -dot(u, eye), dot(f, eye), 1]);
  const aspect = canvas.width / canvas.height, near = cam.dist / 100, far = cam.dist + 4 * data.radius;
  const t = 1 / Math.tan(0.5 * 0.9);
  const proj = new Float32Array([t / aspect, 0, 0, 0, 0, t, 0, 0, 0, 0, (far + near) / (near - far), -1,
                                 0, 0, 2 * far * near / (near - far), 0]);
  return {mvp: multiply(proj, view), right: r, up: u};
}
function draw() {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * dpr; canvas.height = canvas.clientHeight * dpr;
  gl.viewport(0, 0, canvas.width, canvas.height);
  gl.clearColor(1, 1, 1, 1); gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT); gl.enable(gl.DEPTH_TEST);
  usePos(); (mode === "rgb" && useRgb ? useRgb : useClass)();
  gl.uniformMatrix4fv(gl.getUniformLocation(prog, "mvp"), false, matrices().mvp);
  gl.uniform1f(gl.getUniformLocation(prog, "size"), document.getElementById("size").value * dpr);
  data.classes.forEach((c, i) => { if (visible[i] && c.count) gl.drawArrays(gl.POINTS, c.start, c.count); });
}
let drag = null;
canvas.addEventListener("contextmenu", e => e.preventDefault());
canvas.addEventListener("mousedown", e => { drag = {x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey}; });
window.addEventListener("mouseup", () => { drag = null; });
window.addEventListener("mousemove", e => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y; drag.x = e.clientX; drag.y = e.clientY;
  if (drag.pan) {
    const m = matrices(), s = cam.dist / canvas.clientHeight;
    for (let i = 0; i < 3; i++) cam.target[i] += (-dx * m.right[i] + dy * m.up[i]) * s;
  } else {
    cam.yaw -= dx * 0.01; cam.pitch = Math.max(-1.55, Math.min(1.55, cam.pitch + dy * 0.01));
  }
  draw();
});
canvas.addEventListener("wheel", e => {
  e.preventDefault(); cam.dist *= Math.exp(e.deltaY * 0.001); draw();
}, {passive: false});
window.addEventListener("resize", draw);
draw();
</script></body></html>
"""
