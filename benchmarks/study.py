"""What the seed studies (``jitter_study.py``, ``occlusion_study.py``) share: running their (arm, seed)
trainings, optionally in parallel processes and cached run by run, and writing the study's JSON.

A study trains each arm with the same seeds and compares them with :mod:`ditr.stats` (mean, spread,
paired 95% t-intervals). Each run is one call of the study's ``run_one(arm, seed, *extra)``, which
returns a JSON-ready dict with ``arm`` and ``seed``. With a ``cache`` directory every finished run
is written there at once, stamped with the settings it ran under, so a study that is stopped (or
extended by seeds) reruns only what is missing; a run cached under other settings runs again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ditr.fileio import atomic_write_json

Run = Callable[..., dict[str, Any]]


def cached_run(cache: Path | None, arm: str, seed: int, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """The result of (arm, seed) cached under these settings, or None."""
    if cache is None:
        return None
    path = cache / f"{arm}-seed{seed}.json"
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    return entry["result"] if entry.get("settings") == stamp else None


def run_jobs(run_one: Run, jobs: Sequence[tuple[str, int]], extra: Sequence[Any] = (), parallel: int = 1,
             cache: Path | None = None, stamp: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``run_one(arm, seed, *extra)`` for every job, in job order; prints each result as a JSON line.

    ``parallel`` > 1 runs that many at once, each in a fresh interpreter (forking a process whose
    OpenMP threads have run can deadlock); only worth it on an otherwise idle machine. ``cache`` and
    ``stamp``: see the module docstring (a cached result is printed with ``"cached": true``).
    """
    stamp = stamp or {}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for arm, seed in jobs:
        done = cached_run(cache, arm, seed, stamp)
        if done is None:
            todo.append((arm, seed))
        else:
            results[arm, seed] = done
            print(json.dumps({**done, "cached": True}), flush=True)

    def finish(arm: str, seed: int, result: dict[str, Any]) -> None:
        results[arm, seed] = result
        if cache is not None:
            atomic_write_json(cache / f"{arm}-seed{seed}.json", {"settings": stamp, "result": result})
        print(json.dumps(result), flush=True)

    if parallel <= 1:
        for arm, seed in todo:
            finish(arm, seed, run_one(arm, seed, *extra))
    else:
        with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {job: pool.submit(run_one, *job, *extra) for job in todo}
            for (arm, seed), future in futures.items():
                finish(arm, seed, future.result())
    return [results[job] for job in jobs]


def write_study(path: Path, study: dict[str, Any]) -> None:
    """Write the whole study atomically and print its ``summary`` to stderr (stdout carries the runs)."""
    atomic_write_json(path, study)
    print(json.dumps({"summary": study.get("summary")}), file=sys.stderr, flush=True)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options every seed study shares (the small-CPU settings of the synthetic preset)."""
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (only on an otherwise idle machine)")


def check_seeds(parser: argparse.ArgumentParser, seeds: int) -> None:
    """A study needs at least two seeds per arm to say anything about run-to-run noise."""
    if seeds < 2:
        parser.error("--seeds must be at least 2: one seed says nothing about run-to-run noise")
