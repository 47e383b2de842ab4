"""Honest statistics for traffic assertions: exact binomial tests with a stated false-failure rate.

A weight check compares each destination's count with its expected share using an exact two-sided binomial
test, Bonferroni-corrected over destinations, so a correct mesh fails the assertion with probability <= alpha
(default 1e-6). Failures print observed vs expected counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_ALPHA = 1e-6


def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_p_value(k: int, n: int, p: float) -> float:
    """Exact two-sided p-value: the probability of an outcome no more likely than k (minlike method)."""
    if n == 0:
        return 1.0
    ref = _log_pmf(k, n, p)
    total = 0.0
    for i in range(n + 1):
        lp = _log_pmf(i, n, p)
        if lp <= ref + 1e-9:
            total += math.exp(lp)
    return min(1.0, total)


@dataclass(frozen=True)
class SplitReport:
    n: int
    rows: list[tuple[str, int, float, float]]  # name, observed, expected count, p-value
    alpha: float

    @property
    def ok(self) -> bool:
        m = max(1, len(self.rows))
        return all(p >= self.alpha / m for _, _, _, p in self.rows)

    def __str__(self) -> str:
        lines = [
            f"{'destination':<16}{'observed':>10}{'expected':>10}{'p-value':>12}   (n={self.n}, alpha={self.alpha:g})"
        ]
        for name, obs, exp, p in self.rows:
            lines.append(f"{name:<16}{obs:>10}{exp:>10.1f}{p:>12.2e}")
        return "\n".join(lines)


def split_report(counts: Mapping[str, int], expected: Mapping[str, float], alpha: float = DEFAULT_ALPHA) -> SplitReport:
    total_w = sum(expected.values())
    n = sum(counts.values())
    names = sorted(set(counts) | set(expected))
    rows = []
    for name in names:
        p = expected.get(name, 0.0) / total_w
        k = counts.get(name, 0)
        rows.append((name, k, n * p, binomial_p_value(k, n, p)))
    return SplitReport(n, rows, alpha)


def assert_split(counts: Mapping[str, int], expected: Mapping[str, float], alpha: float = DEFAULT_ALPHA) -> SplitReport:
    """Assert observed counts fit the expected weights (any scale: {"v1": 90, "v2": 10})."""
    report = split_report(counts, expected, alpha)
    print(report)
    assert report.ok, f"traffic split does not match the weights:\n{report}"
    return report


def assert_fraction(hits: int, n: int, p: float, what: str = "fraction", alpha: float = DEFAULT_ALPHA) -> None:
    pv = binomial_p_value(hits, n, p)
    print(f"{what}: observed {hits}/{n} = {hits / max(n, 1):.3f}, expected {p:.3f}, p-value {pv:.2e}")
    assert pv >= alpha, f"{what}: observed {hits}/{n}, expected {p:.3f} (p-value {pv:.2e} < alpha {alpha:g})"
