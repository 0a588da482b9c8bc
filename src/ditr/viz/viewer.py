"""A self-contained HTML viewer of labelled points: one file, no server, no libraries, no network.

The points (subsampled to ``max_points``, sorted by class) travel base64-encoded inside the page;
a few lines of WebGL draw them. Sorting by class lets the page hide a class by skipping its range
of the vertex buffer, so toggling classes costs nothing. Mouse: drag to orbit, right-drag or
shift-drag to pan, wheel to zoom; the legend toggles classes; colours switch between classes and
the scan's own RGB when it has one.

The page opens where a person can see the scene (:func:`viewer_camera`): a room from a raised
corner looking in, its ceiling hidden (a check box shows it); a street from above and behind the
sensor, looking the way the front camera looks.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write_text
from ..projection import estimate_point_spacing
from ..scene import View
from .palette import label_colors
from .render import ceiling_mask

#: Points embedded by default: about 8 MB of HTML, smooth in any browser.
MAX_POINTS = 300_000
#: A scene wider than this (metres) with no ceiling is outdoors.
INDOOR_EXTENT = 30.0
#: Grid cell (metres) of the ceiling test.
CEILING_CELL = 0.25
#: Outdoors the camera starts this far behind and above the sensor (metres), looking at the
#: ground this far ahead of it.
BEHIND, ABOVE, AHEAD = 12.0, 8.0, 15.0
#: Indoors the camera looks down at this angle (radians) from over a corner.
INDOOR_PITCH = 0.75
#: The page's vertical field of view (radians) and the canvas height assumed for the point size.
FOV, CANVAS_PX = 0.9, 800
#: Default point size (pixels): about the points' spacing at the target, within these bounds.
POINT_PX = (2.0, 5.0)
#: The spacing for the point size is estimated on at most this many points (it takes seconds on 300k).
SPACING_SAMPLE = 20_000


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def viewer_payload(coord: np.ndarray, labels: np.ndarray, class_names: Sequence[str], rgb: np.ndarray | None,
                   max_points: int = MAX_POINTS, seed: int = 0, views: Sequence[View] = ()) -> dict:
    """The page's data: centred float32 positions, class and RGB colours, per-class ranges and the
    starting camera (:func:`viewer_camera` of the embedded points, so its point size fits them)."""
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
        "camera": _shifted(viewer_camera(coord[order], lab, class_names, views), centre),
    }


def _shifted(camera: dict, centre: np.ndarray) -> dict:
    """``camera`` in the page's frame, whose origin is ``centre``."""
    ceiling_z = camera["ceiling_z"]
    return {**camera, "target": (np.asarray(camera["target"]) - centre).tolist(),
            "ceiling_z": None if ceiling_z is None else ceiling_z - float(centre[2])}


def viewer_camera(coord: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                  views: Sequence[View] = ()) -> dict:
    """Where the page's camera starts and what it hides, in the frame of ``coord``.

    Indoors (a ceiling is found, or the scene is at most ``INDOOR_EXTENT`` wide): from above the
    corner of the bounding box nearest the first view's camera, looking down at ``INDOOR_PITCH``
    into the room, far enough back that the room fits; points of a class named "ceiling" and points
    in the ceiling's height band (:func:`ditr.viz.render.ceiling_mask`) start hidden, or a room seen
    from above shows only its ceiling. Outdoors: ``BEHIND`` m behind and ``ABOVE`` m above the sensor
    (the mean camera centre, else the origin where the points surround it, else the centre),
    facing the first view's heading (else +x), so the street ahead fills the page.
    Returns ``indoor``, ``target`` (3,), ``yaw``, ``pitch``, ``dist`` (the page's orbit camera),
    ``ceiling_z`` (points above it start hidden; None: no band), ``ceiling_classes`` (class ids
    that start hidden with it), ``point_size`` (pixels) and ``fov`` (vertical, radians).
    """
    lo, hi = coord.min(0), coord.max(0)
    centre = (lo + hi) / 2
    ceiling = ceiling_mask(coord, CEILING_CELL)
    ceiling_classes = [i for i, name in enumerate(class_names)
                       if str(name).strip().lower() == "ceiling" and bool(np.any(labels == i))]
    indoor = ceiling is not None or bool(np.max(hi[:2] - lo[:2]) <= INDOOR_EXTENT)
    centres = np.array([v.cam_to_world[:3, 3] for v in views]).reshape(-1, 3)
    if indoor:
        room = coord[~ceiling] if ceiling is not None else coord
        floor, top = float(np.percentile(room[:, 2], 2)), float(room[:, 2].max())
        corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
        near = centres[0, :2] if len(centres) else lo[:2]
        corner = corners[np.argmin(np.linalg.norm(corners - near, axis=1))]
        target = np.array([centre[0], centre[1], floor + 0.3 * (top - floor)])
        fit = float(np.linalg.norm(room.max(0) - room.min(0))) / 2 / np.tan(FOV / 2)
        towards = (corner - target[:2]) / max(float(np.linalg.norm(corner - target[:2])), 1e-6)
        eye = target + fit * np.array([*(np.cos(INDOOR_PITCH) * towards), np.sin(INDOOR_PITCH)])
    else:
        if len(centres):
            sensor = centres.mean(0)
        else:
            sensor = np.zeros(3) if bool(np.all((lo < 0) & (hi > 0))) else centre
        heading = views[0].cam_to_world[:2, 2] if views else np.array([1.0, 0.0])
        heading = heading / norm if (norm := float(np.linalg.norm(heading))) > 1e-6 else np.array([1.0, 0.0])
        ground = float(np.percentile(coord[:, 2], 5))
        eye = np.array([*(sensor[:2] - BEHIND * heading), sensor[2] + ABOVE])
        target = np.array([*(sensor[:2] + AHEAD * heading), ground])
    offset = eye - target
    dist = float(np.linalg.norm(offset))
    pixels_per_metre = CANVAS_PX / (2 * dist * np.tan(FOV / 2))
    spacing = _spacing(coord)
    return {
        "indoor": indoor,
        "target": target.tolist(),
        "yaw": float(np.arctan2(offset[1], offset[0])),
        "pitch": float(np.arctan2(offset[2], np.linalg.norm(offset[:2]))),
        "dist": dist,
        "ceiling_z": None if ceiling is None else float(coord[ceiling, 2].min()) - 1e-3,
        "ceiling_classes": ceiling_classes if indoor else [],
        "point_size": float(np.clip(np.round(2 * spacing * pixels_per_metre) / 2, *POINT_PX)),
        "fov": FOV,
    }


def _spacing(coord: np.ndarray, sample: int = SPACING_SAMPLE) -> float:
    """The points' typical spacing, from a random ``sample`` of them (spacing goes as 1 / sqrt(count))."""
    n = len(coord)
    if n > sample:
        coord = coord[np.random.default_rng(0).choice(n, sample, replace=False)]
    sub = estimate_point_spacing(torch.from_numpy(np.ascontiguousarray(coord, np.float32)))
    return sub * float(np.sqrt(len(coord) / max(n, 1)))


def write_viewer(path: str | Path, coord: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 rgb: np.ndarray | None = None, title: str = "ditr", max_points: int = MAX_POINTS,
                 views: Sequence[View] = ()) -> Path:
    """Write the viewer page for points ``coord`` (N, 3) with class ids ``labels`` (N,).

    ``views`` (the scene's cameras, optional) choose where the page's camera starts (:func:`viewer_camera`).

    Class names and the title are data (they come from checkpoints, configs and bundles): they
    reach the page only as escaped text (the ``<title>``) and inside the JSON block, from which
    the script builds every element with DOM text APIs.
    """
    payload = viewer_payload(coord, labels, class_names, rgb, max_points, views=views)
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
 <div>point size <input id="size" type="range" min="1" max="8" step="0.5"></div>
 <div><label id="ceilingrow"><input id="ceiling" type="checkbox"> show ceiling</label></div>
 <div><button id="all">all</button> <button id="none">none</button> <button id="reset">reset view</button></div>
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
const panel = document.getElementById("panel");
const gl = canvas.getContext("webgl", {antialias: true});
if (!gl) { document.body.textContent = "This viewer needs WebGL."; throw new Error("no WebGL"); }
function shader(type, src) {
  const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
  return s;
}
const prog = gl.createProgram();
gl.attachShader(prog, shader(gl.VERTEX_SHADER,
  "attribute vec3 pos; attribute vec3 col; uniform mat4 mvp; uniform float size, zcut; varying vec3 c;" +
  "void main(){ gl_Position = pos.z > zcut ? vec4(0.0, 0.0, 2.0, 1.0) : mvp * vec4(pos, 1.0);" +
  " gl_PointSize = size; c = col / 255.0; }"));
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
// a room's ceiling starts hidden: its height band (zcut) and a class named "ceiling"
const ceilingClass = data.classes.map(c => data.camera.ceiling_classes.includes(c.id));
const hasCeiling = data.camera.ceiling_z !== null || ceilingClass.some(Boolean);
const visible = ceilingClass.map(isCeiling => !isCeiling);
if (!hasCeiling) document.getElementById("ceilingrow").style.display = "none";
const legend = document.getElementById("legend");
// Every element below is built with DOM APIs; data (names, title) only ever becomes text.
document.title = data.title;
document.getElementById("title").textContent = data.title;
data.classes.forEach((c, i) => {
  const row = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox"; box.checked = visible[i];
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
const ceilingBox = document.getElementById("ceiling");
ceilingBox.addEventListener("change", () => {
  legend.querySelectorAll("input").forEach((b, i) => {
    if (ceilingClass[i]) { b.checked = ceilingBox.checked; visible[i] = b.checked; }
  });
  draw();
});
// camera: orbit (yaw, pitch, distance) around a target, z up; it starts where the page's writer chose
const start = data.camera;
const cam = {};
function resetView() {
  Object.assign(cam, {yaw: start.yaw, pitch: start.pitch, dist: start.dist, target: start.target.slice()});
}
resetView();
document.getElementById("size").value = start.point_size;
document.getElementById("reset").onclick = () => { resetView(); draw(); };
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
  const t = 1 / Math.tan(0.5 * data.camera.fov);
  // the view's centre sits in the middle of the canvas right of the panel, so the panel hides no part of it
  const shift = Math.min(0.4, panel.offsetWidth / canvas.clientWidth) || 0;
  const proj = new Float32Array([t / aspect, 0, 0, 0, 0, t, 0, 0, -shift, 0, (far + near) / (near - far), -1,
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
  const zcut = start.ceiling_z === null || ceilingBox.checked ? 1e30 : start.ceiling_z;
  gl.uniform1f(gl.getUniformLocation(prog, "zcut"), zcut);
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
