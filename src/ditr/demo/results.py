"""The demo's results over seeds: per run the mean and standard deviation of each metric and the
per-seed values, per comparison the paired difference with its 95% interval (:mod:`ditr.stats`),
and the closing lines that say what they show.

A seed fixes a room set and the training seed of every run on it, so two runs of one seed share
their rooms: their difference is paired by seed, which removes most of the room-to-room spread.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .. import stats
from ..io.synthetic import CLASS_NAMES
from .settings import COMPARISONS, RUNS

if TYPE_CHECKING:
    from .pipeline import SeedPlan

#: Metrics averaged over seeds (fractions in [0, 1]); ``miou`` is the one compared.
METRICS = ("miou", "macc", "allacc", "val_miou")


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None


def run_summary(run: str, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A run's row: mean (``miou``, ...), ``<metric>_std`` and ``<metric>_per_seed`` of each metric,
    per-class ``iou`` means and ``iou_std``, and every seed's own row under ``seeds``."""
    spec = RUNS[run]
    row: dict[str, Any] = {"description": spec.description, "input_features": list(spec.input_features),
                           "teacher": spec.teacher, "needs_images": spec.needs_images}
    seeds = sorted(per_seed)
    for metric in METRICS:
        values = [per_seed[s].get(metric) for s in seeds]
        row[metric], row[f"{metric}_std"] = _mean_std(values)
        row[f"{metric}_per_seed"] = {str(s): v for s, v in zip(seeds, values)}
    row["iou"], row["iou_std"] = {}, {}
    for name in CLASS_NAMES:
        row["iou"][name], row["iou_std"][name] = _mean_std([per_seed[s]["iou"].get(name) for s in seeds])
    if spec.distils:
        row["teacher_cosine"], row["teacher_cosine_std"] = _mean_std([per_seed[s]["teacher_cosine"] for s in seeds])
    row["seeds"] = {str(s): per_seed[s] for s in seeds}
    return row


def comparisons(plans: Sequence[SeedPlan], runs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``"<run> - <baseline>"``: the paired difference of test mIoU over the seeds both ran, with
    the per-seed differences (NaN spread and interval with one seed)."""
    rows = [{"arm": run, "seed": plan.seed, "miou": plan.results[run]["miou"]}
            for plan in plans for run in runs if run in plan.results]
    table = {}
    for run, baseline in COMPARISONS:
        if run in runs and baseline in runs:
            difference = stats.paired_difference(rows, run, baseline, "miou")
            a, b = stats.by_seed(rows, run), stats.by_seed(rows, baseline)
            table[f"{run} - {baseline}"] = {
                "run": run, "baseline": baseline, "metric": "miou", **difference,
                "per_seed": {str(s): a[s]["miou"] - b[s]["miou"] for s in difference["seeds"]}}
    return table


def summarise(plans: Sequence[SeedPlan], runs: Sequence[str], vfms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json without the pictures and timing: runs, comparisons, seeds, settings, rooms."""
    settings = plans[0].settings
    return {
        "runs": {run: run_summary(run, {p.seed: p.results[run] for p in plans}) for run in runs},
        "comparisons": comparisons(plans, runs),
        "seeds": [p.seed for p in plans],
        "settings": {k: v for k, v in asdict(settings).items() if k != "seed"},
        "teachers": {"trained": vfms.get(settings.teacher), "random": vfms.get(settings.random_teacher)},
        "rooms": {str(p.seed): {role: [r.name for r in rooms] for role, rooms in p.rooms.items()} for p in plans},
        "classes": list(CLASS_NAMES),
    }


def _percent(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:5.1f}%" + (f" +- {100 * std:.1f}" if std is not None else "")


def closing_lines(results: dict[str, Any], out: str) -> list[str]:
    """What the demo prints at the end: test mIoU per run (mean +- std over seeds), each comparison's
    paired difference with its 95% interval and whether it excludes zero, the time, where the files are."""
    seeds = results["seeds"]
    rooms = results["settings"]["test_rooms"]
    what = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean +- standard deviation over {len(seeds)} seeds"
    lines = [f"test mIoU ({rooms} test rooms per seed, every point, final models), {what}:"]
    width = max(len(r) for r in results["runs"])
    lines += [f"  {run:<{width}} {_percent(row['miou'], row['miou_std'])}" for run, row in results["runs"].items()]
    if results["comparisons"]:
        lines.append("paired differences (mIoU points; 95% interval over seeds):" if len(seeds) > 1
                     else "differences on this seed (one seed gives no interval):")
    for name, c in results["comparisons"].items():
        if len(seeds) > 1:
            low, high = (100 * v for v in c["ci95"])
            verdict = "above zero" if low > 0 else "below zero" if high < 0 else "includes zero: within noise"
            lines.append(f"  {name:<40} {100 * c['mean']:+5.1f}  [{low:+.1f}, {high:+.1f}]  {verdict}")
        else:
            lines.append(f"  {name:<40} {100 * c['mean']:+5.1f}")
    minutes, seconds = divmod(int(results["seconds"]), 60)
    lines.append(f"done in {minutes} min {seconds:02d} s; results: {out}/results.json; pictures: {out}/*.png")
    if results.get("note"):
        lines.append(results["note"])
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (written as ``results.md`` beside results.json): test mIoU (%)
    per run and seed with mean and standard deviation, then each comparison's paired difference
    (points) per seed with its mean and 95% interval."""
    seeds = [str(s) for s in results["seeds"]]

    def cell(value: float | None, digits: int = 1, sign: str = "") -> str:
        return "n/a" if value is None else f"{100 * value:{sign}.{digits}f}"

    head = "| run | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |"
    lines = [f"Test mIoU (%), {results['settings']['test_rooms']} test rooms per seed, final models:", "",
             head, "|---|" + "---:|" * (len(seeds) + 2)]
    for run, row in results["runs"].items():
        values = [cell(row["miou_per_seed"].get(s)) for s in seeds]
        lines.append(f"| `{run}` | " + " | ".join(values) + f" | {cell(row['miou'])} | {cell(row['miou_std'])} |")
    if results["comparisons"]:
        lines += ["", "Paired differences of test mIoU (points), 95% Student-t interval over the seeds:", "",
                  "| comparison | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | 95% interval |",
                  "|---|" + "---:|" * (len(seeds) + 2)]
        for name, c in results["comparisons"].items():
            values = [cell(c["per_seed"].get(s), sign="+") for s in seeds]
            low, high = c["ci95"]
            interval = "n/a" if low is None or high is None or math.isnan(low) else \
                f"[{100 * low:+.1f}, {100 * high:+.1f}]"
            lines.append(f"| `{name}` | " + " | ".join(values) + f" | {cell(c['mean'], sign='+')} | {interval} |")
    return "\n".join(lines) + "\n"
