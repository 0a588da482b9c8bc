"""Seed statistics for comparing training recipes: mean, spread and 95% t-intervals, paired by seed.

A comparison of two recipes ("arms") trains each with the same few seeds, where a seed fixes the
initial weights and the data draws. Run-to-run noise is then mostly shared by the two runs of one
seed, so the difference of the arms is estimated from the per-seed differences (a paired
comparison), whose spread is far smaller than either arm's. With a handful of seeds the normal
approximation is too narrow, hence Student's t. The benchmark studies (``benchmarks/*_study.py``)
and anything else that reports "A vs B over seeds" use these functions, so every table in the
docs is computed the same way.

Results are plain dicts, one per run, with at least ``arm`` and ``seed`` keys and numeric metrics.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Two-sided 95% quantiles of Student's t by degrees of freedom (runs - 1); :func:`t95` beyond 30.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
       29: 2.045, 30: 2.042}
#: The normal quantile, which t approaches; beyond 30 degrees of freedom t95 stays within 2% of it.
Z95 = 1.960


def t95(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom (NaN for df < 1).

    Tabulated to 30; above, the first-order expansion ``z (1 + (z^2 + 1) / (4 df))``, within 0.1%
    there, so that a study with many seeds still gets an interval."""
    if df < 1:
        return float("nan")
    if df in T95:
        return T95[df]
    return Z95 * (1 + (Z95 ** 2 + 1) / (4 * df))


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the 95% t-interval of the mean of ``values``.

    With one value the spread and interval are NaN (one run says nothing about run-to-run noise);
    ``excludes_zero`` says whether the interval lies wholly on one side of 0, the test a difference
    must pass before it is called an effect rather than noise."""
    n = len(values)
    if n == 0:
        raise ValueError("interval: no values")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else float("nan")
    half = t95(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    low, high = mean - half, mean + half
    return {"mean": mean, "std": std, "ci95": [low, high], "n": n,
            "excludes_zero": bool(low > 0 or high < 0)}


def by_seed(results: Iterable[Mapping[str, Any]], arm: str) -> dict[int, Mapping[str, Any]]:
    """The runs of one arm keyed by seed (a seed may appear only once per arm)."""
    rows: dict[int, Mapping[str, Any]] = {}
    for r in results:
        if r["arm"] == arm:
            if r["seed"] in rows:
                raise ValueError(f"arm {arm!r} has seed {r['seed']} twice")
            rows[r["seed"]] = r
    return rows


def paired_difference(results: Iterable[Mapping[str, Any]], arm: str, baseline: str, key: str) -> dict[str, Any]:
    """:func:`interval` of ``arm - baseline`` in ``key`` over the seeds both arms ran (``seeds`` lists them)."""
    results = list(results)
    a, b = by_seed(results, arm), by_seed(results, baseline)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"arms {arm!r} and {baseline!r} share no seed")
    return {**interval([float(a[s][key]) - float(b[s][key]) for s in seeds]), "seeds": seeds}


def compare_arms(results: Iterable[Mapping[str, Any]], arms: Sequence[str], keys: Sequence[str],
                 baseline: str | None = None, averages: Sequence[str] = ()) -> dict[str, Any]:
    """Per arm: :func:`interval` of each metric in ``keys`` and the plain mean of each of ``averages``
    (costs such as seconds per step, where a spread is not the point); per arm other than
    ``baseline``: ``<key>_minus_<baseline>``, the :func:`paired_difference` of each metric.
    Arms without runs are left out."""
    results = list(results)
    table: dict[str, Any] = {}
    for arm in arms:
        rows = [by_seed(results, arm)[s] for s in sorted(by_seed(results, arm))]
        if not rows:
            continue
        entry: dict[str, Any] = {key: interval([float(r[key]) for r in rows]) for key in keys}
        for key in averages:
            entry[key] = statistics.fmean(float(r[key]) for r in rows)
        if baseline is not None and arm != baseline and by_seed(results, baseline):
            for key in keys:
                entry[f"{key}_minus_{baseline}"] = paired_difference(results, arm, baseline, key)
        table[arm] = entry
    return table
