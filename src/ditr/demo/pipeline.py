"""``run_demo``: the demo's stages in order, its runs side by side in worker processes, and what it
prints while it works (a header per stage, a bar per task with elapsed time and ETA).

Layout of ``OUT``: ``rooms/seed_<k>/`` (each seed's room set), ``features/`` (one content-keyed
cache for every seed and 2D model), ``runs/seed_<k>/<run>/`` (a training run; ``<run>.distill/``
beside it for D-DITR's pretraining) with ``result.json`` once the run is evaluated: a run with a
result is not trained again, so an interrupted study resumes run by run (and a run mid-way resumes
from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue as queue_module
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.logging import ProgressBar, format_duration, to_jsonable
from ..errors import DitrError
from ..fileio import atomic_write, atomic_write_bytes, atomic_write_json
from ..io.synthetic import CLASS_NAMES
from .results import markdown, summarise
from .runs import distill_run, evaluate_run, features_run, make_room, train_run, worker_pool
from .settings import DEMO_RUNS, MODES, RUNS, STUDY_RUNS, DemoSettings, Mode, RunSpec, distill_config, run_config

STAGES = ("synthesise rooms", "2D features", "train and evaluate", "figures")
#: Off a terminal (CI logs), a progress line per task at most this often (seconds).
PLAIN_EVERY_S = 20.0


def default_workers() -> int:
    """One worker per core, at most three (the runs of one seed that can go side by side)."""
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
        """Set ``task``'s bar (made on first use, hidden once complete) to ``completed`` of ``total``."""
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(task, total, completed)
        self.counts[task] = completed
        self.bar.update(task=self.tasks[task], completed=completed, info=info)
        if completed >= total:
            self.bar.hide(self.tasks[task])

    def advance(self, task: str, total: int, count: int = 1, info: str = "") -> None:
        self.progress(task, self.counts.get(task, 0) + count, total, info)

    def handle(self, message: tuple) -> None:
        """A worker's report (:func:`ditr.demo.runs.report`)."""
        kind, task = message[0], message[1]
        if kind == "start":
            self.line(f"{task}: started")
        elif kind == "step":
            self.progress(task, message[2], message[3], message[4])
        elif kind == "advance":
            self.advance(task, message[3], message[2], message[4])
        elif kind == "line":
            self.line(f"{task}: {message[2]}")

    def drain(self, reports: Any) -> None:
        while True:
            try:
                self.handle(reports.get_nowait())
            except queue_module.Empty:
                return


@dataclass
class Job:
    """A call to run in a worker; the lowest ``priority`` goes first."""

    name: str
    fn: Callable[..., Any]
    args: tuple
    priority: tuple[int, ...]


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


def intro(settings: DemoSettings, mode: Mode | None, workers: int, runs: Sequence[str] = DEMO_RUNS,
          seeds: Sequence[int] = (0,)) -> str:
    """The demo's first line: what it will do, its stages and how long it is expected to take."""
    name = f"ditr demo --{mode.name}" if mode is not None else "ditr demo (settings of your own)"
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]})"
    text = (f"{name}: {' vs '.join(runs)}, {seed_text}; per seed {settings.train_rooms} training + "
            f"{settings.val_rooms} validation + {settings.test_rooms} test synthetic rooms "
            f"({settings.points:,} points, {settings.views} views each), {settings.steps} training steps per run, "
            f"{workers} worker process{'es' if workers > 1 else ''}. Stages: {', '.join(STAGES)}. ")
    if mode is not None and list(runs) == list(DEMO_RUNS) and len(seeds) == 1:
        text += f"Expected time: {mode.expected} (longer on a busy machine)."
    elif mode is not None and list(runs) == list(STUDY_RUNS) and mode.study_expected:
        text += f"Expected time: {mode.study_expected}, less for runs done before (longer on a busy machine)."
    else:
        text += "Expected time: not measured for these settings; each bar shows its ETA."
    if mode is not None and not mode.is_result:
        text += (" SMOKE TEST: a first look at every stage, with too few rooms and steps for its numbers "
                 "to mean anything (not a result; `ditr demo --quick` is the demo).")
    elif len(seeds) == 1:
        text += " One seed is not a result: `ditr demo --quick --seeds 5` runs the study (docs/demo.md)."
    return text


def _reset_runs_if_settings_changed(runs_dir: Path, settings: DemoSettings) -> None:
    """Runs resume (and results count) only under the settings they were made with: other settings
    (another budget or teacher) start a seed's runs afresh. Rooms and features are content-keyed and stay."""
    stamp = runs_dir / "settings.json"
    current = to_jsonable(asdict(settings))
    if runs_dir.exists() and (not stamp.is_file() or json.loads(stamp.read_text()) != current):
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, current)


@dataclass
class SeedPlan:
    """One seed of the demo: its settings, rooms by role and the folder of its runs."""

    settings: DemoSettings
    rooms: dict[str, list[Path]]
    runs_dir: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.settings.seed

    def work_dir(self, run: str) -> Path:
        return self.runs_dir / run

    def result_path(self, run: str) -> Path:
        return self.work_dir(run) / "result.json"


def run_demo(out: str | Path, settings: DemoSettings, quiet: bool = False, workers: int | None = None,
             threads: int = 1, runs: Sequence[str] = DEMO_RUNS, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Run the demo's ``runs`` for each of ``seeds`` (default: the settings' seed) into ``out`` with
    ``workers`` processes of ``threads`` torch threads each; returns (and writes) the results.
    Progress goes to stderr unless ``quiet``."""
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        raise DitrError(f"demo runs {unknown or '[]'}: choose among {', '.join(RUNS)}")
    runs = [r for r in RUNS if r in runs]
    out = Path(out)
    seeds = list(seeds) if seeds is not None else [settings.seed]
    workers = workers or default_workers()
    mode = mode_of(settings)
    start = time.perf_counter()
    with ProgressBar(enabled=not quiet, plain_every_s=PLAIN_EVERY_S) as bar:
        display = Display(bar)
        bar.print(intro(settings, mode, workers, runs, seeds))
        pool, reports = worker_pool(workers, threads)
        with pool:
            plans = _make_rooms(pool, reports, display, out, settings, seeds, workers)
            vfms = _fill_features(pool, reports, display, out, plans, runs, workers)
            _train_and_evaluate(pool, reports, display, out, plans, runs, vfms, workers)
        results = summarise(plans, runs, vfms)
        results["pictures"] = _figures(display, out, plans[0], runs, results)
    results.update(mode=mode.name if mode else "custom", workers=workers, seconds=round(time.perf_counter() - start, 1))
    if mode is not None and not mode.is_result:
        results["note"] = ("SMOKE TEST: too few rooms and steps for the numbers to mean anything; not a result "
                           "(ditr demo --quick is the demo)")
    elif len(seeds) == 1:
        results["note"] = "one seed is not a result: differences of a few points are within seed noise (docs/demo.md)"
    results = to_jsonable(results)
    atomic_write_json(out / "results.json", results)
    atomic_write_bytes(out / "results.md", markdown(results).encode())
    return results


def _make_rooms(pool: ProcessPoolExecutor, reports: Any, display: Display, out: Path, settings: DemoSettings,
                seeds: Sequence[int], workers: int) -> list[SeedPlan]:
    """Every seed's room set (made where missing) and its plan."""
    split = settings.room_split()
    total = settings.rooms_per_seed
    display.stage("synthesise rooms", f"{total} rooms per seed in {out / 'rooms'} (kept and reused)")
    display.progress("synthesise rooms", 0, total * len(seeds))
    jobs = [Job(f"{seed}/{i}", make_room, (out / "rooms" / f"seed_{seed}", i, total, seed, settings.points,
                                           settings.views), (0,))
            for seed in seeds for i in range(total)]

    def room_made(name: str, path: str) -> list[Job]:
        display.advance("synthesise rooms", total * len(seeds), info=f"seed {name.replace('/', ', room ')}")
        return []

    made = run_jobs(pool, reports, display, jobs, workers, room_made)
    plans = []
    for seed in seeds:
        rooms = {role: [Path(made[f"{seed}/{i}"]) for i in indices] for role, indices in split.items()}
        plan = SeedPlan(dataclasses.replace(settings, seed=seed), rooms, out / "runs" / f"seed_{seed}")
        _reset_runs_if_settings_changed(plan.runs_dir, plan.settings)
        plans.append(plan)
    return plans


def _fill_features(pool: ProcessPoolExecutor, reports: Any, display: Display, out: Path, plans: list[SeedPlan],
                   runs: Sequence[str], workers: int) -> dict[str, dict[str, Any]]:
    """The 2D features of every view (and its mirror image) of every room, for each 2D model the
    runs read or distil, split over the workers; what each model is, by model name."""
    settings = plans[0].settings
    models = {m for r in runs if (m := settings.vfm_of(RUNS[r])) is not None}
    vfms: dict[str, dict[str, Any]] = {}
    if not models:
        return vfms
    rooms = [room for plan in plans for role in plan.rooms.values() for room in role]
    images = len(rooms) * settings.views * 2
    for model in sorted(models, key=lambda m: m != settings.teacher):
        task = f"2D features {model}"
        display.stage("2D features", f"{model}, every view and its mirror image")
        checkpoint = settings.teacher_checkpoint if model == settings.teacher else None
        shares = [rooms[k::workers] for k in range(workers) if rooms[k::workers]]
        jobs = [Job(f"{model}/{k}", features_run, (task, share, model, out / "features", checkpoint, images), (0,))
                for k, share in enumerate(shares)]
        infos = run_jobs(pool, reports, display, jobs, workers)
        info = dict(infos[jobs[0].name])
        for key in ("images", "computed", "damaged", "migrated"):
            info[key] = sum(i[key] for i in infos.values())
        vfms[model] = info
        if info["random_weights"]:
            display.line(f"{model}: random weights, not real DINO features")
    return vfms


def _train_and_evaluate(pool: ProcessPoolExecutor, reports: Any, display: Display, out: Path, plans: list[SeedPlan],
                        runs: Sequence[str], vfms: dict[str, dict[str, Any]], workers: int) -> None:
    """Every (seed, run) without a result: distillation first where the run has one, training, then
    evaluation on the test rooms, whose result is saved at once. Fills each plan's ``results``."""
    first = plans[0]
    dims = {m: v["feature_dim"] for m, v in vfms.items()}
    precisions = {v["precision"] for v in vfms.values()} or {"auto"}
    if len(precisions) > 1:
        raise DitrError(f"the demo's 2D models cache features at different precisions {sorted(precisions)}")
    precision = precisions.pop()
    display.stage("train and evaluate", f"{len(runs)} run(s) x {len(plans)} seed(s); evaluation on the test rooms")
    configs: dict[str, Any] = {}
    jobs: list[Job] = []
    pictured = next((r for r in runs if RUNS[r].distils), None)  # the run whose student is drawn
    for plan in plans:
        for run in runs:
            spec = RUNS[run]
            if plan.result_path(run).is_file():
                plan.results[run] = json.loads(plan.result_path(run).read_text())
                display.line(f"{run} seed {plan.seed}: done before, result reused")
                continue
            config = run_config(spec, plan.settings, out / "features", dims, precision)
            configs[f"{plan.seed}/{run}"] = config
            vfm = plan.settings.vfm_of(spec)
            if spec.distils and vfm is not None:
                sources = plan.rooms["train"] + plan.rooms["unlabelled"]
                distillation = distill_config(config, dims[vfm], len(sources), spec.distill_steps(plan.settings.steps),
                                              plan.settings.distill_views)
                picture = out / f"distillation_{run}.png" if plan is first and run == pictured else None
                jobs.append(Job(f"{plan.seed}/{run}/distil", distill_run,
                                (f"{run} seed {plan.seed} distil", distillation,
                                 plan.work_dir(run).with_name(f"{run}.distill"), sources, plan.rooms["val"], picture),
                                (plan.seed, 0)))
            else:
                jobs.append(_training_job(plan, run, config))

    def then(name: str, result: dict[str, Any]) -> list[Job]:
        seed, run, what = name.split("/")
        plan = next(p for p in plans if str(p.seed) == seed)
        if what == "distil":
            plan.results.setdefault(run, {})["distillation"] = result
            return [_training_job(plan, run, configs[f"{seed}/{run}"], result["distill_checkpoint"])]
        if what == "train":
            plan.results.setdefault(run, {})["training"] = result
            return [Job(f"{seed}/{run}/evaluate", evaluate_run,
                        (f"{run} seed {seed} evaluate", result["checkpoint"], plan.rooms["test"]), (-1, plan.seed))]
        labels = result.pop("labels")
        atomic_write(plan.work_dir(run) / "test_labels.npz", lambda fh: np.savez_compressed(fh, **labels))
        row = _result_row(RUNS[run], plan.results[run], result["metrics"], configs[f"{seed}/{run}"])
        atomic_write_json(plan.result_path(run), to_jsonable(row))
        plan.results[run] = row
        display.line(f"{run} seed {seed}: test mIoU {100 * row['miou']:.1f}%")
        return []

    run_jobs(pool, reports, display, jobs, workers, then)


def _training_job(plan: SeedPlan, run: str, config: Any, init: str | None = None) -> Job:
    return Job(f"{plan.seed}/{run}/train", train_run,
               (f"{run} seed {plan.seed}", config, plan.work_dir(run), plan.rooms["train"], plan.rooms["val"], init),
               (plan.seed, 0 if init is not None else 1))


def _result_row(spec: RunSpec, parts: dict[str, Any], metrics: dict[str, Any], config: Any) -> dict[str, Any]:
    """A (seed, run)'s result.json: test metrics, how it was trained, and its distillation if any."""
    training = dict(parts["training"])
    row = {"miou": metrics["miou"], "macc": metrics["macc"], "allacc": metrics["allacc"], "iou": metrics["iou"],
           "val_miou": training.pop("val_miou"), "steps": training["steps"], "train_seconds": training["train_seconds"],
           "checkpoint": training["checkpoint"], "needs_images": config.kind.needs_images_at_inference,
           "input_features": list(spec.input_features)}
    if "distillation" in parts:
        distillation = dict(parts["distillation"])
        distillation.pop("picture", None)
        row.update(distillation)
    return row


def _figures(display: Display, out: Path, plan: SeedPlan, runs: Sequence[str],
             results: dict[str, Any]) -> dict[str, str]:
    """The demo's pictures: per-class IoU of every run over the seeds, and from the first seed the
    training curves, the test view where DITR and 3D-only differ most, the distilled student."""
    from ..scene import Scene
    from ..viz.labels import plot_method_iou, render_label_comparison
    from .figures import choose_view, plot_curves

    display.stage("figures")
    mode = mode_of(plan.settings)
    tag = "; SMOKE TEST, not a result" if mode is not None and not mode.is_result else ""
    rows = results["runs"]
    n = len(results["seeds"])
    seeds_text = f"mean and standard deviation over {n} seeds" if n > 1 else f"seed {results['seeds'][0]}, one seed"
    label = {r: f"{r} (mIoU {100 * rows[r]['miou']:.1f}%)" for r in runs}
    pictures: dict[str, Path] = {
        "per_class_iou": plot_method_iou(
            {label[r]: list(rows[r]["iou"].values()) for r in runs}, CLASS_NAMES, out / "per_class_iou.png",
            title=f"per-class IoU (%) on {plan.settings.test_rooms} test rooms per seed, final models; "
                  f"{seeds_text}{tag}",
            errors={label[r]: list(rows[r]["iou_std"].values()) for r in runs} if n > 1 else None),
        "training_curves": plot_curves({r: plan.work_dir(r) for r in runs}, out / "training_curves.png",
                                       title=f"seed {plan.seed}"),
    }
    distilled = next((out / f"distillation_{r}.png" for r in runs if RUNS[r].distils), None)
    if distilled is not None and distilled.is_file():
        pictures["distillation"] = distilled
    if {"ditr", "3d-only"} <= set(runs):
        shown = [r for r in DEMO_RUNS if r in runs]
        labels = {r: dict(np.load(plan.work_dir(r) / "test_labels.npz")) for r in shown}
        chosen = choose_view(plan.rooms["test"], labels, "ditr", "3d-only")
        scene = Scene.load(chosen.room)
        truth = scene.segment()
        assert truth is not None  # choose_view picks among labelled rooms only
        pictures["predictions"] = render_label_comparison(
            scene, {"ground truth": truth, **{r: labels[r][scene.name] for r in shown}}, CLASS_NAMES,
            out / f"predictions_{scene.name}.png", view=chosen.view, compare=("ditr", "3d-only"),
            title=f"seed {plan.seed}, {scene.name} (test), {scene.views[chosen.view].name}: of the "
                  f"{chosen.visible_points:,} points it sees, DITR alone is right on {chosen.better_only:,}, "
                  f"3D-only alone on {chosen.worse_only:,}; teacher {plan.settings.teacher}{tag}")
        results["prediction_view"] = {"seed": plan.seed, "room": scene.name, "view": scene.views[chosen.view].name,
                                      "visible_points": chosen.visible_points, "ditr_only_right": chosen.better_only,
                                      "3d_only_only_right": chosen.worse_only}
    for name, path in pictures.items():
        display.line(f"{name}: {path}")
    return {k: str(v) for k, v in pictures.items()}
