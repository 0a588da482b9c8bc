#!/usr/bin/env bash
# Regenerates the pictures in docs/images/ from synthetic scenes (`ditr synth`): projection overlays
# (docs/projection.md), the ground-truth visibility picture (docs/synthetic.md) and what
# `ditr predict` writes (docs/predict.md), the 3D viewer as headless Chromium shows it.
#
#   docs/images/make_images.sh [WORK]      # WORK: scratch folder (default: a new temporary one)
#
# Environment: DITR, the command that runs ditr (default `ditr`); PYTHON, the Python that has ditr
# installed (default `python`); STUDY, an existing `ditr demo --quick --seeds 5` output folder (the
# study's chart is copied only when given); DEMO, an existing `ditr demo --quick` output folder to predict with
# (default: run the demo into WORK/demo, about 6 minutes on 2 CPU cores); CHROMIUM, the browser
# (default `chromium`; the viewer picture is skipped, with a message, when it is not installed).
# The PNGs are written with a 256-colour palette to keep the docs small.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:-$(mktemp -d)}
DITR=${DITR:-ditr}
PYTHON=${PYTHON:-python}
CHROMIUM=${CHROMIUM:-chromium}
mkdir -p "$WORK"

# Projection overlays: a room and a street, points coloured by depth, occluded points magenta.
$DITR synth "$WORK/rooms" --scenes 1 --seed 0 --width 720 --height 540
$DITR project "$WORK/rooms/room_0000" --out "$WORK/room.npz" --render "$WORK/room_overlays" > /dev/null
cp "$WORK/room_overlays/view_03.png" "$HERE/overlay-room.png"
$DITR synth "$WORK/streets" --outdoor --scenes 3 --seed 0
$DITR project "$WORK/streets/street_0000" --out "$WORK/street.npz" --render "$WORK/street_overlays" > /dev/null
cp "$WORK/street_overlays/CAM_FRONT.png" "$HERE/overlay-street.png"

# Ground-truth visibility of a street (the recipe in docs/synthetic.md).
(cd "$WORK" && "$PYTHON" - <<'EOF'
import dataclasses
import numpy as np
import torch
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene
from ditr.viz.overlay import render_overlays

scene = Scene.load("streets/street_0002")
truth = np.load("streets/street_0002/visibility_gt.npz")["visible"]
corr = project_scene(scene, ProjectionConfig(occlusion="none"))  # pixels and in_frame only
render_overlays(scene, dataclasses.replace(corr, visible=torch.from_numpy(truth)), "overlays")
EOF
)
cp "$WORK/overlays/CAM_BACK_LEFT.png" "$HERE/street-visibility-gt.png"

# What `ditr predict` writes, with the demo's DITR model (seed 0) on its first test room.
if [ -z "${DEMO:-}" ]; then
  DEMO="$WORK/demo"
  $DITR demo --quick --out "$DEMO"
fi
$DITR predict "$DEMO/runs/seed_0/ditr/last.pt" "$DEMO/rooms/seed_0/room_0020" --out "$WORK/pred" --views all --html \
  --device cpu --quiet > /dev/null
cp "$WORK/pred/view_04.png" "$HERE/predict-view.png"
cp "$WORK/pred/topdown.png" "$HERE/predict-topdown.png"
if command -v "$CHROMIUM" > /dev/null; then
  "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-background-networking \
    --use-angle=swiftshader --enable-unsafe-swiftshader --window-size=1000,640 --virtual-time-budget=5000 \
    --screenshot="$HERE/predict-viewer.png" "file://$WORK/pred/pred.html" 2> /dev/null
else
  echo "$CHROMIUM is not installed: predict-viewer.png is left as it is" >&2
fi

# The demo study's per-class chart, from an existing `ditr demo --quick --seeds 5` output folder (about an hour).
if [ -n "${STUDY:-}" ]; then
  cp "$STUDY/per_class_iou.png" "$HERE/demo-study-per-class-iou.png"
fi

# The outdoor occlusion study's per-class differences, redrawn from its record (docs/occlusion-study.json).
PYTHONPATH="$HERE/../../benchmarks${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "
import json, sys
from pathlib import Path
from occlusion_study import plot_study
plot_study(json.load(open('$HERE/../occlusion-study.json')), Path('$HERE/occlusion-study-per-class.png'))
"

"$PYTHON" - "$HERE" <<'EOF'
import sys
from pathlib import Path
from PIL import Image

for path in sorted(Path(sys.argv[1]).glob("*.png")):
    image = Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    print(f"{path.name}: {image.size[0]}x{image.size[1]}, {path.stat().st_size // 1024} KB")
EOF
