"""ditr.stats: the t table, intervals and paired comparisons that the seed studies report."""

from __future__ import annotations

import math

import pytest

from ditr.stats import T95, compare_arms, interval, paired_difference, t95


def _t_tail(x: float, df: int, steps: int = 20000) -> float:
    """P(T > x) for Student's t, by Simpson's rule on the density over [0, x]."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    h = x / steps
    f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
    area = h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
    return 0.5 - area


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 45, 200])
def test_t95_is_the_two_sided_95_percent_quantile(df):
    assert _t_tail(t95(df), df) == pytest.approx(0.025, abs=2e-4)


def test_table_is_rounded_to_three_decimals():
    assert all(round(v, 3) == v for v in T95.values()) and math.isnan(t95(0))


def test_interval_mean_spread_and_zero():
    out = interval([3.0, 4.0, 5.0])
    assert out["mean"] == 4.0 and out["std"] == 1.0 and out["n"] == 3
    assert out["ci95"] == pytest.approx([4 - 4.303 / math.sqrt(3), 4 + 4.303 / math.sqrt(3)])
    assert out["excludes_zero"] and not interval([1.0, 2.0, 3.0])["excludes_zero"]
    assert not interval([-1.0, 2.0])["excludes_zero"]
    single = interval([0.5])
    assert math.isnan(single["std"]) and not single["excludes_zero"]


def test_paired_difference_removes_what_the_seeds_share():
    # each seed moves both arms alike; the arms differ by exactly 0.01
    runs = [{"arm": a, "seed": s, "m": base + (0.01 if a == "b" else 0.0)}
            for s, base in enumerate([0.3, 0.5, 0.4]) for a in ("a", "b")]
    diff = paired_difference(runs, "b", "a", "m")
    assert diff["mean"] == pytest.approx(0.01) and diff["std"] == pytest.approx(0.0, abs=1e-12)
    assert diff["seeds"] == [0, 1, 2]
    table = compare_arms(runs, ["a", "b"], ["m"], baseline="a")
    assert table["a"]["m"]["std"] == pytest.approx(0.1) and "m_minus_a" not in table["a"]
    assert table["b"]["m_minus_a"]["mean"] == pytest.approx(0.01)


def test_a_seed_twice_in_one_arm_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        paired_difference([{"arm": "a", "seed": 0, "m": 1}] * 2, "a", "a", "m")
