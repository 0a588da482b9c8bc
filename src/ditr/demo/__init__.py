"""``ditr demo``: the whole method end to end on synthetic rooms, with pictures.

1. Synthesise rooms (kept in ``OUT/rooms`` and reused by later runs with the same seed).
2. Extract 2D features of every view (and its mirror image) into ``OUT/features`` with a VFM: the
   tiny random-weight DINOv2 offline, a real checkpoint when given.
3. Train a 3D-only PTv3 and a DITR model with the same budget, and D-DITR: distil the 2D features
   into a 3D-only PTv3 (same step budget), then fine-tune it with the 3D-only recipe and budget.
   The 3D input is geometry only (position + normal): classes that differ in appearance alone (door, window, picture and
   whiteboard panels on the wall, rugs on the floor) can be told apart only through the images.
   The runs go side by side in worker processes, one per core (:mod:`ditr.demo.runs`).
4. Evaluate all on held-out rooms (3d-only and d-ditr without images); write ``OUT/results.json``
   (docs/demo.md#output: mIoU and per-class IoU as fractions, IoU by class name), a per-class IoU
   chart, the training curves, the held-out camera view where DITR and 3D-only differ most
   (:mod:`ditr.demo.figures`), and the distilled student's features beside the teacher's.

Modules: :mod:`~ditr.demo.settings` (sizes, modes, run configs), :mod:`~ditr.demo.runs` (the work
done in worker processes), :mod:`~ditr.demo.figures` (pictures), :mod:`~ditr.demo.pipeline`
(the stages in order and the progress output).
"""

from __future__ import annotations

from .figures import plot_curves, render_student_vs_teacher
from .pipeline import run_demo
from .settings import METHODS, MODES, DemoSettings, demo_distill_config, method_config

__all__ = ["METHODS", "MODES", "DemoSettings", "demo_distill_config", "method_config", "plot_curves",
           "render_student_vs_teacher", "run_demo"]
