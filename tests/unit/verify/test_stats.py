"""The stated error rates are the real ones: computed exactly over every path of the sequential test, no sampling."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from mesh.verify.stats import (
    SequentialBinomial,
    SequentialSplit,
    acceptance_region,
    power,
    required_sample_size,
    sequential_split,
)


def operating_characteristic(
    p0: float, deviation: float, truth: float, alpha: float, beta: float
) -> tuple[float, float]:
    """P(fail) and E[n] of SequentialBinomial(p0) when hits really occur with probability `truth`, exactly.

    After n observations the test's state is (hits, which sides accepted): each side's log likelihood ratio is a
    function of (n, hits). A dynamic program carries the probability of every undecided state forward, applying
    the boundaries the test states (reject_at, accept_at, the exact test at max_n) independently of its `add`."""
    test = SequentialBinomial(p0, deviation, alpha, beta)
    ups = [s.up for s in test.sides]
    downs = [s.down for s in test.sides]
    states: dict[tuple[int, tuple[bool, ...]], float] = {(0, tuple(False for _ in ups)): 1.0}
    fail = expected_n = 0.0
    for n in range(1, test.max_n + 1):
        nxt: dict[tuple[int, tuple[bool, ...]], float] = defaultdict(float)
        for (hits, accepted), prob in states.items():
            for k, p in ((hits + 1, truth), (hits, 1 - truth)):
                if p == 0.0:
                    continue
                llrs = [k * u + (n - k) * d for u, d in zip(ups, downs, strict=True)]
                if any(llr >= test.reject_at for llr, a in zip(llrs, accepted, strict=True) if not a):
                    fail += prob * p
                    expected_n += prob * p * n
                    continue
                acc = tuple(a or llr <= test.accept_at for llr, a in zip(llrs, accepted, strict=True))
                if all(acc):
                    expected_n += prob * p * n
                elif n == test.max_n:
                    lo, hi = acceptance_region(n, p0, alpha / 2)
                    fail += prob * p * (not lo <= k <= hi)
                    expected_n += prob * p * n
                else:
                    nxt[(k, acc)] += prob * p
        states = nxt
    return fail, expected_n


def test_a_seeded_path_decides_the_obvious_way() -> None:
    """A true 50/50 passes and a true 65/35 fails when the test is told 50/50 +- 15 points."""
    rng = random.Random(5)
    for truth in (0.5, 0.65):
        test = SequentialBinomial(0.5, 0.15)
        while test.add(rng.random() < truth) is None:
            pass
        assert test.decision == ("pass" if truth == 0.5 else "fail")


@pytest.mark.parametrize(("p0", "deviation"), [(0.5, 0.15), (0.9, 0.1), (0.2, 0.1)])
def test_sequential_error_rates_are_exact_and_within_the_stated_bounds(p0: float, deviation: float) -> None:
    alpha, beta = 1e-6, 0.01
    false_failure, n_null = operating_characteristic(p0, deviation, p0, alpha, beta)
    assert false_failure <= alpha
    for truth in (p0 - deviation, p0 + deviation):
        if 0 < truth < 1:
            detect, _ = operating_characteristic(p0, deviation, truth, alpha, beta)
            assert detect >= 1 - beta, f"power {detect:.4f} against {truth}"
    # and it needs fewer requests on average than the fixed-sample test with the same guarantees
    assert n_null < required_sample_size(p0, deviation, alpha, beta)


def test_fixed_sample_size_buys_the_stated_power() -> None:
    n = required_sample_size(0.5, 0.05, 1e-6, 0.01)
    assert power(n, 0.5, 0.05, 1e-6) >= 0.99
    assert power(n // 2, 0.5, 0.05, 1e-6) < 0.99
    lo, hi = acceptance_region(n, 0.5, 1e-6)
    assert lo < n / 2 < hi


def test_the_old_400_request_check_was_weak() -> None:
    """The issue's numbers: 400 requests at 1e-6 cannot tell 60/40 from 50/50 reliably."""
    assert power(400, 0.5, 0.10, 1e-6) < 0.9


def test_impossible_outcomes_fail_at_once() -> None:
    test = SequentialSplit({"v1": 100})
    assert test.add("v1") is None
    assert test.add("v2") == "fail"
    assert test.evidence().observed == {"v1": 1, "v2": 1}


def test_split_passes_a_correct_mesh_and_fails_a_wrong_one_seeded() -> None:
    rng = random.Random(8)
    good = sequential_split(lambda: "v1" if rng.random() < 0.9 else "v2", {"v1": 90, "v2": 10})
    assert good.ok and good.n < required_sample_size(0.9, 0.05, 1e-6, 0.01)
    bad = sequential_split(lambda: "v1" if rng.random() < 0.8 else "v2", {"v1": 90, "v2": 10})
    assert not bad.ok
    assert "observed" in str(bad) and "false failure <= 1e-06" in str(bad)


def test_three_way_split_tests_every_destination() -> None:
    rng = random.Random(3)
    weights = {"v1": 50, "v2": 30, "v3": 20}
    evidence = sequential_split(lambda: rng.choices(list(weights), list(weights.values()))[0], weights)
    assert evidence.ok
    skewed = sequential_split(lambda: rng.choices(list(weights), [50, 20, 30])[0], weights)
    assert not skewed.ok
