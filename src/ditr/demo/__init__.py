"""``ditr demo``: the method end to end on synthetic rooms, over one seed or a study of several.

1. Synthesise each seed's rooms (training, validation, test; ``OUT/rooms/seed_<k>``, reused).
2. Extract 2D features of every view (and its mirror image) into ``OUT/features`` with the trained
   teacher ``demo-vit-rooms`` (shipped with ditr; docs/demo-teacher.md) and, for the control runs,
   the random-weight ViT.
3. Train the runs (:data:`~ditr.demo.settings.RUNS`: 3D-only PTv3 on colour + normal, DITR, D-DITR
   distilled then fine-tuned, and the study's controls) with the same budget, side by side in
   worker processes (:mod:`ditr.demo.runs`); evaluate each final model on the test rooms, which
   nothing was tuned on, and save its result at once (a study resumes run by run).
4. Write ``OUT/results.json`` (:mod:`ditr.demo.results`: per run mean, spread and per-seed values;
   per comparison the paired difference with a 95% interval), a per-class IoU chart with error
   bars, the training curves, the test view where DITR and 3D-only differ most
   (:mod:`ditr.demo.figures`), and the distilled student's features beside the teacher's.

Modules: :mod:`~ditr.demo.settings` (runs, sizes, modes, run configs), :mod:`~ditr.demo.runs` (the
work done in worker processes), :mod:`~ditr.demo.results` (statistics over seeds),
:mod:`~ditr.demo.figures` (pictures), :mod:`~ditr.demo.pipeline` (the stages in order and the
progress output).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name lives; imported on first use, so that reading the run names
#: (``ditr demo --help``) does not import torch.
_EXPORTS = {"plot_curves": "figures", "render_student_vs_teacher": "figures", "run_demo": "pipeline",
            "DEMO_RUNS": "settings", "MODES": "settings", "RUNS": "settings", "STUDY_RUNS": "settings",
            "DemoSettings": "settings", "RunSpec": "settings", "distill_config": "settings", "run_config": "settings"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ditr.demo' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
