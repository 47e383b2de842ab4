"""Honest statistics for traffic assertions: both error rates stated, and as few requests as the evidence needs.

Every assertion answers "does the observed fraction equal the declared one?" with two guarantees:

- false failure <= alpha (default 1e-6): a correct mesh fails the check at most that often;
- power >= 1 - beta (default 0.99) against a stated deviation (default 5 points): a mesh whose fraction is off by
  the deviation or more passes at most beta of the time.

Fixed-sample checks (`assert_split`, `assert_fraction`) use exact binomial tests and report the power their sample
size buys. Sequential checks (`SequentialBinomial`, `sequential_split`) test after every observation with Wald's
likelihood ratio against p0 - d and p0 + d and stop as soon as the evidence is decisive either way. Their bounds
are not Wald's approximations: under the null the likelihood ratio is a non-negative martingale, so by Ville's
inequality it ever reaches 1/a with probability <= a (and symmetrically under each alternative for beta). The test
is truncated at the fixed-sample size that alone has the stated power, where an exact binomial test decides; half
of each error budget goes to each part, so the union bound holds exactly. tests/unit/verify checks the real error
rates by exact dynamic programming over (n, hits), not by simulation.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_ALPHA = 1e-6
DEFAULT_BETA = 0.01
DEFAULT_DEVIATION = 0.05

Decision = Literal["pass", "fail"]


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


def _cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly from the log pmf."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return min(1.0, sum(math.exp(_log_pmf(i, n, p)) for i in range(k + 1)))


@functools.lru_cache(maxsize=4096)
def acceptance_region(n: int, p: float, alpha: float) -> tuple[int, int]:
    """The hits [lo, hi] an equal-tailed exact test at level alpha accepts (each tail <= alpha / 2)."""
    lo, acc = 0, 0.0
    while lo <= n:
        nxt = acc + math.exp(_log_pmf(lo, n, p))
        if nxt > alpha / 2:
            break
        acc, lo = nxt, lo + 1
    hi, acc = n, 0.0
    while hi >= 0:
        nxt = acc + math.exp(_log_pmf(hi, n, p))
        if nxt > alpha / 2:
            break
        acc, hi = nxt, hi - 1
    return lo, hi


def power(n: int, p0: float, deviation: float = DEFAULT_DEVIATION, alpha: float = DEFAULT_ALPHA) -> float:
    """The probability that the exact test at level alpha with n samples rejects p0 when the truth is p0 +- d."""
    lo, hi = acceptance_region(n, p0, alpha)
    worst = 1.0
    for p1 in (p0 - deviation, p0 + deviation):
        if 0.0 <= p1 <= 1.0:
            worst = min(worst, _cdf(lo - 1, n, p1) + 1.0 - _cdf(hi, n, p1))
    return worst


@functools.lru_cache(maxsize=1024)
def required_sample_size(
    p0: float, deviation: float = DEFAULT_DEVIATION, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA
) -> int:
    """The smallest n whose exact test at level alpha has power >= 1 - beta against p0 +- deviation."""
    hi = 16
    while power(hi, p0, deviation, alpha) < 1 - beta:
        hi *= 2
    lo = hi // 2
    while lo + 1 < hi:  # power is not strictly monotone in n (lattice effects); the bisection finds a valid n
        mid = (lo + hi) // 2
        if power(mid, p0, deviation, alpha) >= 1 - beta:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass
class _Side:
    """One of the two one-sided likelihood-ratio tests: p0 against p1 = p0 - d or p0 + d."""

    up: float  # log LR added by a hit
    down: float  # log LR added by a miss
    llr: float = 0.0
    accepted: bool = False


@dataclass
class SequentialBinomial:
    """Is the fraction of hits p0? Feed observations with `add`; `decision` becomes "pass" or "fail" when decisive.

    False failure <= alpha, and failing to fail when the truth is p0 +- deviation (or further) <= beta."""

    p0: float
    deviation: float = DEFAULT_DEVIATION
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    max_n: int = 0  # 0: the fixed-sample size with the stated power at level alpha / 2
    n: int = 0
    hits: int = 0
    decision: Decision | None = None
    sides: list[_Side] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p0 <= 1.0:
            raise ValueError(f"p0 must be a fraction, got {self.p0}")
        if self.max_n == 0:
            self.max_n = required_sample_size(self.p0, self.deviation, self.alpha / 2, self.beta / 2)
        for p1 in (self.p0 - self.deviation, self.p0 + self.deviation):
            p1 = min(max(p1, 0.0), 1.0)
            if p1 == self.p0 or not 0.0 < p1 < 1.0:
                continue
            self.sides.append(_Side(_log_ratio(p1, self.p0), _log_ratio(1 - p1, 1 - self.p0)))
        self.reject_at = math.log(max(1, len(self.sides)) / (self.alpha / 2))
        self.accept_at = math.log(self.beta / 2)

    def add(self, hit: bool) -> Decision | None:
        if self.decision is not None:
            return self.decision
        self.n += 1
        self.hits += hit
        if (hit and self.p0 == 0.0) or (not hit and self.p0 == 1.0):
            self.decision = "fail"  # an outcome the declared fraction makes impossible
            return self.decision
        for side in self.sides:
            if side.accepted:
                continue
            side.llr += side.up if hit else side.down
            if side.llr >= self.reject_at:
                self.decision = "fail"
                return self.decision
            side.accepted = side.llr <= self.accept_at
        if all(s.accepted for s in self.sides):
            self.decision = "pass"
        elif self.n >= self.max_n:
            lo, hi = acceptance_region(self.n, self.p0, self.alpha / 2)
            self.decision = "pass" if lo <= self.hits <= hi else "fail"
        return self.decision

    @property
    def expected_hits(self) -> float:
        return self.n * self.p0


def _log_ratio(a: float, b: float) -> float:
    if a <= 0.0:
        return -math.inf
    if b <= 0.0:
        return math.inf
    return math.log(a / b)


@dataclass(frozen=True)
class SplitEvidence:
    """What a split check saw: observed vs expected counts per destination, and the decision with its error rates."""

    n: int
    observed: dict[str, int]
    expected: dict[str, float]  # fractions
    decision: Decision
    alpha: float
    beta: float
    deviation: float
    sequential: bool = True

    @property
    def ok(self) -> bool:
        return self.decision == "pass"

    def rows(self) -> list[tuple[str, int, float]]:
        names = sorted(set(self.observed) | set(self.expected))
        return [(name, self.observed.get(name, 0), self.n * self.expected.get(name, 0.0)) for name in names]

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "decision": self.decision,
            "observed": dict(sorted(self.observed.items())),
            "expected": {k: round(v * self.n, 1) for k, v in sorted(self.expected.items())},
            "alpha": self.alpha,
            "beta": self.beta,
            "deviation": self.deviation,
        }

    def __str__(self) -> str:
        how = "sequential" if self.sequential else "fixed"
        lines = [
            f"{'destination':<16}{'observed':>10}{'expected':>10}   ({how}, n={self.n}, {self.decision}; "
            f"false failure <= {self.alpha:g}, power >= {1 - self.beta:g} against +-{self.deviation * 100:g} points)"
        ]
        lines += [f"{name:<16}{obs:>10}{exp:>10.1f}" for name, obs, exp in self.rows()]
        return "\n".join(lines)


def fractions(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"weights must have a positive total: {dict(weights)}")
    return {k: v / total for k, v in weights.items()}


class SequentialSplit:
    """Do observed destinations follow the weights? One SequentialBinomial per destination (Bonferroni on alpha).

    Two destinations need one test (their counts are complements); an unexpected destination fails at once."""

    def __init__(
        self,
        expected: Mapping[str, float],
        *,
        deviation: float = DEFAULT_DEVIATION,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
    ) -> None:
        self.expected = fractions(expected)
        self.deviation, self.alpha, self.beta = deviation, alpha, beta
        names = sorted(self.expected)
        tested = names[:1] if len(names) == 2 else names
        self.tests = {
            name: SequentialBinomial(self.expected[name], deviation, alpha / len(tested), beta) for name in tested
        }
        self.counts: Counter[str] = Counter()
        self.decision: Decision | None = None

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def add(self, destination: str) -> Decision | None:
        if self.decision is not None:
            return self.decision
        self.counts[destination] += 1
        if destination not in self.expected:
            self.decision = "fail"
            return self.decision
        decisions = [t.add(destination == name) for name, t in self.tests.items()]
        if "fail" in decisions:
            self.decision = "fail"
        elif all(d == "pass" for d in decisions):
            self.decision = "pass"
        return self.decision

    def evidence(self) -> SplitEvidence:
        return SplitEvidence(
            self.n, dict(self.counts), self.expected, self.decision or "fail", self.alpha, self.beta, self.deviation
        )


def sequential_split(
    draw: Callable[[], str],
    expected: Mapping[str, float],
    *,
    deviation: float = DEFAULT_DEVIATION,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
) -> SplitEvidence:
    """Draw destinations one at a time until the split is decisively right or wrong."""
    test = SequentialSplit(expected, deviation=deviation, alpha=alpha, beta=beta)
    while test.add(draw()) is None:
        pass
    return test.evidence()


def sequential_fraction(
    draw: Callable[[], bool],
    p0: float,
    *,
    deviation: float = DEFAULT_DEVIATION,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
) -> SplitEvidence:
    """Draw hit/miss outcomes until their fraction is decisively p0 or not (e.g. a fault's abort percentage)."""
    test = SequentialBinomial(p0, deviation, alpha, beta)
    while test.add(draw()) is None:
        pass
    observed = {"hit": test.hits, "miss": test.n - test.hits}
    return SplitEvidence(test.n, observed, {"hit": p0, "miss": 1 - p0}, test.decision or "fail", alpha, beta, deviation)


def assert_sequential_split(
    draw: Callable[[], str], expected: Mapping[str, float], *, deviation: float = DEFAULT_DEVIATION
) -> SplitEvidence:
    """Assert the weights hold: false failure <= 1e-6, power >= 0.99 against `deviation` (5 points by default)."""
    evidence = sequential_split(draw, expected, deviation=deviation)
    print(evidence)
    assert evidence.ok, f"traffic split does not match the weights:\n{evidence}"
    return evidence


def assert_sequential_fraction(
    draw: Callable[[], bool], p0: float, what: str = "fraction", *, deviation: float = DEFAULT_DEVIATION
) -> SplitEvidence:
    evidence = sequential_fraction(draw, p0, deviation=deviation)
    print(f"{what}:\n{evidence}")
    assert evidence.ok, f"{what} does not match {p0:.3f}:\n{evidence}"
    return evidence


@dataclass(frozen=True)
class SplitReport:
    n: int
    rows: list[tuple[str, int, float, float]]  # name, observed, expected count, p-value
    alpha: float
    deviation: float = DEFAULT_DEVIATION

    @property
    def ok(self) -> bool:
        m = max(1, len(self.rows))
        return all(p >= self.alpha / m for _, _, _, p in self.rows)

    @property
    def power(self) -> float:
        """The power this sample size had against +-deviation on the least powerful destination."""
        m = max(1, len(self.rows))
        return (
            min(
                (power(self.n, exp / self.n, self.deviation, self.alpha / m) for _, _, exp, _ in self.rows), default=0.0
            )
            if self.n
            else 0.0
        )

    def __str__(self) -> str:
        lines = [
            f"{'destination':<16}{'observed':>10}{'expected':>10}{'p-value':>12}   (n={self.n}, "
            f"false failure <= {self.alpha:g}, power {self.power:.3f} against +-{self.deviation * 100:g} points)"
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
    """Assert observed counts fit the expected weights (any scale: {"v1": 90, "v2": 10}); fixed sample, exact."""
    report = split_report(counts, expected, alpha)
    print(report)
    assert report.ok, f"traffic split does not match the weights:\n{report}"
    return report


def assert_fraction(hits: int, n: int, p: float, what: str = "fraction", alpha: float = DEFAULT_ALPHA) -> None:
    pv = binomial_p_value(hits, n, p)
    print(f"{what}: observed {hits}/{n} = {hits / max(n, 1):.3f}, expected {p:.3f}, p-value {pv:.2e}")
    assert pv >= alpha, f"{what}: observed {hits}/{n}, expected {p:.3f} (p-value {pv:.2e} < alpha {alpha:g})"
