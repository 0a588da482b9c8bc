"""``run_demo``: the demo's stages in order, its runs side by side in worker processes, and what it
prints while it works (a header per stage, a bar per task with elapsed time and ETA)."""

from __future__ import annotations

import dataclasses
import os
import queue as queue_module
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..engine.logging import ProgressBar, format_duration, to_jsonable
from ..fileio import atomic_write_json
from ..io.synthetic import CLASS_NAMES
from .runs import distill_run, evaluate_run, make_room, train_run, worker_pool
from .settings import METHODS, MODES, DemoSettings, Mode, method_config

#: The stages, in the order they start (the four trainings overlap when there are several workers).
STAGES = ("synthesise rooms", "2D features", "train 3D-only", "train DITR", "distil D-DITR", "fine-tune D-DITR",
          "evaluate", "figures")
#: The stage each worker run belongs to.
RUN_STAGES = {"3d-only": "train 3D-only", "ditr": "train DITR", "d-ditr distil": "distil D-DITR",
              "d-ditr": "fine-tune D-DITR"}
#: Off a terminal (CI logs), a progress line per task at most this often (seconds).
PLAIN_EVERY_S = 20.0


def default_workers() -> int:
    """One worker per core, at most three (the runs that can go side by side)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(3, cores))


def mode_of(settings: DemoSettings) -> Mode | None:
    """The named mode these settings are (any seed), or None for settings of one's own."""
    plain = dataclasses.replace(settings, seed=0)
    return next((m for m in MODES.values() if plain == DemoSettings(**m.settings)), None)


class Display:
    """What the demo prints: numbered stage headers and lines with the time since the start, and a
    progress bar per task (plain lines with elapsed time and ETA off a terminal)."""

    def __init__(self, bar: ProgressBar):
        self.bar, self.start = bar, time.monotonic()
        self.tasks: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.started: set[str] = set()

    def stamp(self) -> str:
        return f"[{format_duration(time.monotonic() - self.start)}]"

    def stage(self, name: str, detail: str = "") -> None:
        self.started.add(name)
        number = f"({STAGES.index(name) + 1}/{len(STAGES)})"
        self.bar.print(f"{self.stamp()} {number} {name}" + (f": {detail}" if detail else ""))

    def line(self, text: str) -> None:
        self.bar.print(f"{self.stamp()}   {text}")

    def progress(self, task: str, completed: int, total: int, info: str = "") -> None:
        """Set ``task``'s bar (made on first use) to ``completed`` of ``total``."""
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(task, total, completed)
        self.counts[task] = completed
        self.bar.update(task=self.tasks[task], completed=completed, info=info)

    def advance(self, task: str, total: int, count: int = 1, info: str = "") -> None:
        self.progress(task, self.counts.get(task, 0) + count, total, info)

    def handle(self, message: tuple) -> None:
        """A worker's report (:func:`ditr.demo.runs.report`)."""
        kind, run = message[0], message[1]
        if kind == "start" and run in RUN_STAGES:
            self.stage(RUN_STAGES[run])
        elif kind == "start":
            if "evaluate" not in self.started:
                self.stage("evaluate", "every point of the held-out rooms, final models")
            self.line(run)
        elif kind == "step":
            self.progress(RUN_STAGES[run], message[2], message[3], message[4])
        elif kind == "line":
            self.line(f"{run}: {message[2]}")

    def drain(self, reports: Any) -> None:
        while True:
            try:
                self.handle(reports.get_nowait())
            except queue_module.Empty:
                return


@dataclass
class Job:
    """A call to run in a worker; lower ``priority`` first (the longest chain goes first)."""

    name: str
    fn: Callable[..., Any]
    args: tuple
    priority: int


def run_jobs(pool: ProcessPoolExecutor, reports: Any, display: Display, jobs: Sequence[Job], workers: int,
             then: Callable[[str, Any], list[Job]] = lambda name, result: []) -> dict[str, Any]:
    """Run ``jobs`` and those ``then(name, result)`` adds as each finishes, at most ``workers`` at
    a time, showing the workers' reports meanwhile; the results by job name.

    Jobs are handed to the pool only when a worker is free, so the most urgent ready job always
    goes next and nothing is left queued in the pool when one fails.
    """
    ready = list(jobs)
    running: dict[Future, Job] = {}
    results: dict[str, Any] = {}
    while ready or running:
        ready.sort(key=lambda j: j.priority)
        while ready and len(running) < workers:
            job = ready.pop(0)
            running[pool.submit(job.fn, *job.args)] = job
        done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
        display.drain(reports)
        for future in done:
            job = running.pop(future)
            results[job.name] = future.result()
            ready += then(job.name, results[job.name])
    display.drain(reports)
    return results


def intro(settings: DemoSettings, mode: Mode | None, workers: int) -> str:
    """The demo's first line: what it will do, its stages and how long it is expected to take."""
    name = f"ditr demo --{mode.name}" if mode is not None else "ditr demo (settings of your own)"
    text = (f"{name}: 3D-only PTv3 vs DITR vs D-DITR on {settings.train_rooms} training + {settings.val_rooms} "
            f"held-out synthetic rooms ({settings.points:,} points, {settings.views} views each), "
            f"{settings.steps} training steps per run, {workers} worker process{'es' if workers > 1 else ''}. "
            f"Stages: {', '.join(STAGES)}. ")
    if mode is None:
        text += "Expected time: not measured for these settings; each bar shows its ETA."
    else:
        text += f"Expected time: {mode.expected} (longer on a busy machine)."
    if mode is not None and not mode.is_result:
        text += (" SMOKE TEST: a first look at every stage, with too few rooms and steps for its numbers "
                 "to mean anything (not a result; `ditr demo --quick` is the demo).")
    return text


def _reset_runs_if_settings_changed(runs_dir: Path, settings: DemoSettings) -> None:
    """Training runs resume only under the settings they were started with: other settings (a new
    seed, budget or VFM) start them afresh. Rooms and features are content-keyed and stay."""
    import json
    import shutil

    stamp = runs_dir / "settings.json"
    current = to_jsonable(asdict(settings))
    if runs_dir.exists() and (not stamp.is_file() or json.loads(stamp.read_text()) != current):
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, current)


def run_demo(out: str | Path, settings: DemoSettings, quiet: bool = False, workers: int | None = None,
             threads: int = 1) -> dict[str, Any]:
    """Run the demo into ``out`` with ``workers`` processes of ``threads`` torch threads each;
    returns (and writes) the results. Progress goes to stderr unless ``quiet``."""
    from ..vfm.extract import fill_scene_features

    out = Path(out)
    workers = workers or default_workers()
    mode = mode_of(settings)
    start = time.perf_counter()
    with ProgressBar(enabled=not quiet, plain_every_s=PLAIN_EVERY_S) as bar:
        display = Display(bar)
        bar.print(intro(settings, mode, workers))
        pool, reports = worker_pool(workers, threads)
        with pool:
            total = settings.train_rooms + settings.val_rooms + settings.distill_rooms
            display.stage("synthesise rooms", f"{total} rooms in {out / 'rooms'} (kept and reused)")
            display.progress("synthesise rooms", 0, total)
            room_jobs = [Job(f"room_{i:04d}", make_room, (out / "rooms", i, total, settings.seed, settings.points,
                                                         settings.views), 0) for i in range(total)]

            def room_made(name: str, _: str) -> list[Job]:
                display.advance("synthesise rooms", total, info=name)
                return []

            made = run_jobs(pool, reports, display, room_jobs, workers, room_made)
            rooms = [Path(made[job.name]) for job in room_jobs]
            display.stage("2D features", f"{settings.vfm_model}, every view and its mirror image")
            images = total * settings.views * 2
            vfm = fill_scene_features(rooms, settings.vfm_model, out / "features", checkpoint=settings.vfm_checkpoint,
                                      on_progress=lambda n: display.advance("2D features", images, n, "images"))
            if vfm["random_weights"]:
                display.line(f"{settings.vfm_model}: random weights, not real DINO features")
            results = _train_and_evaluate(pool, reports, display, out, settings, rooms, vfm, workers)
        results["pictures"] = _figures(display, out, settings, results, vfm)
    results.update(mode=mode.name if mode else "custom", workers=workers,
                   seconds=round(time.perf_counter() - start, 1))
    if mode is not None and not mode.is_result:
        results["note"] = ("SMOKE TEST: too few rooms and steps for the numbers to mean anything; not a result "
                           "(ditr demo --quick is the demo)")
    atomic_write_json(out / "results.json", to_jsonable(results))
    return results


def _train_and_evaluate(pool: ProcessPoolExecutor, reports: Any, display: Display, out: Path,
                        settings: DemoSettings, rooms: list[Path], vfm: dict[str, Any], workers: int) -> dict[str, Any]:
    """The four runs (three of them independent, D-DITR's fine-tuning after its distillation) and the
    evaluation of each final model, as workers free up; the results without pictures."""
    labelled = settings.train_rooms + settings.val_rooms
    train_rooms, val_rooms = rooms[:settings.train_rooms], rooms[settings.train_rooms:labelled]
    unlabelled_rooms = rooms[labelled:]
    steps_per_epoch = -(-settings.train_rooms // settings.batch_size)
    _reset_runs_if_settings_changed(out / "runs", settings)
    configs = {m: method_config(m, settings, out / "features", vfm["feature_dim"], vfm["precision"], steps_per_epoch)
               for m in METHODS}
    work_dirs = {m: out / "runs" / m for m in METHODS}

    def training(method: str, init: str | None = None) -> Job:
        return Job(method, train_run, (method, configs[method], work_dirs[method], train_rooms, val_rooms, init),
                   0 if method == "d-ditr" else 1)

    def then(name: str, result: dict[str, Any]) -> list[Job]:
        if name == "d-ditr distil":
            return [training("d-ditr", result["distill_checkpoint"])]
        if name in METHODS:
            return [Job(f"evaluate {name}", evaluate_run, (f"evaluate {name}", result["checkpoint"], val_rooms), 2)]
        display.line(f"{name.removeprefix('evaluate ')}: held-out mIoU {100 * result['metrics']['miou']:.1f}%")
        return []

    first = [Job("d-ditr distil", distill_run, ("d-ditr distil", configs["d-ditr"], out, vfm["feature_dim"],
                                                 train_rooms + unlabelled_rooms, val_rooms, settings.distill_steps,
                                                 settings.distill_views), 0),
             training("3d-only"), training("ditr")]
    done = run_jobs(pool, reports, display, first, workers, then)
    runs: dict[str, Any] = {}
    for method in METHODS:
        metrics = done[f"evaluate {method}"]["metrics"]
        extra = dict(done["d-ditr distil"]) if method == "d-ditr" else {}
        extra.pop("picture", None)
        runs[method] = {"miou": metrics["miou"], "macc": metrics["macc"], "allacc": metrics["allacc"],
                        "iou": metrics["iou"], **done[method],
                        "needs_images": configs[method].kind.needs_images_at_inference, **extra}
    return {"runs": runs, "vfm": vfm, "settings": asdict(settings),
            "rooms": {"train": [p.name for p in train_rooms], "val": [p.name for p in val_rooms],
                      "unlabelled": [p.name for p in unlabelled_rooms]},
            "classes": list(CLASS_NAMES),
            "labels": {m: done[f"evaluate {m}"]["labels"] for m in METHODS},
            "distillation_picture": done["d-ditr distil"]["picture"]}


def _figures(display: Display, out: Path, settings: DemoSettings, results: dict[str, Any],
             vfm: dict[str, Any]) -> dict[str, str]:
    """The demo's pictures; takes the predictions out of ``results`` and adds the chosen view."""
    from ..scene import Scene
    from ..viz.labels import plot_method_iou, render_label_comparison
    from .figures import choose_view, plot_curves

    display.stage("figures")
    mode = mode_of(settings)
    tag = "; SMOKE TEST, not a result" if mode is not None and not mode.is_result else ""
    runs, labels = results["runs"], results.pop("labels")
    val_rooms = [out / "rooms" / name for name in results["rooms"]["val"]]
    pictures = {
        "per_class_iou": plot_method_iou(
            {f"{m} (mIoU {100 * r['miou']:.1f}%)": list(r["iou"].values()) for m, r in runs.items()},
            CLASS_NAMES, out / "per_class_iou.png",
            title=f"per-class IoU (%) on {len(val_rooms)} held-out rooms, final models{tag}"),
        "training_curves": plot_curves({m: out / "runs" / m for m in METHODS}, out / "training_curves.png"),
        "distillation": Path(results.pop("distillation_picture")),
    }
    chosen = choose_view(val_rooms, labels, "ditr", "3d-only")
    scene = Scene.load(chosen.room)
    truth = scene.segment()
    assert truth is not None  # choose_view picks among labelled rooms only
    weights = f"{settings.vfm_model}" + (" (random weights)" if vfm["random_weights"] else "")
    pictures["predictions"] = render_label_comparison(
        scene, {"ground truth": truth, **{m: labels[m][scene.name] for m in METHODS}}, CLASS_NAMES,
        out / f"predictions_{scene.name}.png", view=chosen.view, compare=("ditr", "3d-only"),
        title=f"{scene.name} (held out), {scene.views[chosen.view].name}: of the {chosen.visible_points:,} points it "
              f"sees, DITR alone is right on {chosen.better_only:,}, 3D-only alone on {chosen.worse_only:,}; "
              f"2D features: {weights}{tag}")
    results["prediction_view"] = {"room": scene.name, "view": scene.views[chosen.view].name,
                                  "visible_points": chosen.visible_points, "ditr_only_right": chosen.better_only,
                                  "3d_only_only_right": chosen.worse_only}
    for name, path in pictures.items():
        display.line(f"{name}: {path}")
    return {k: str(v) for k, v in pictures.items()}
