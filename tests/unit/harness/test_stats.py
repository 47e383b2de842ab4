"""The statistics behind traffic assertions are exact and have the stated false-failure rate."""

from __future__ import annotations

import itertools
import math
import random
import threading
import time

import pytest

from mesh.harness.stats import (
    assert_fraction,
    assert_sequential_split,
    assert_split,
    binomial_p_value,
    in_flight,
    split_report,
)


def test_binomial_p_value_matches_known_values() -> None:
    # R: binom.test(3, 10, 0.5)$p.value == 0.34375 ; binom.test(0, 20, 0.1)$p.value == 0.2545
    assert binomial_p_value(3, 10, 0.5) == pytest.approx(0.34375)
    assert binomial_p_value(0, 20, 0.1) == pytest.approx(
        0.9**20 + sum(math.comb(20, k) * 0.1**k * 0.9 ** (20 - k) for k in range(4, 21)), rel=1e-9
    )
    assert binomial_p_value(50, 100, 0.5) == pytest.approx(1.0)


def test_a_correct_split_passes_and_a_wrong_one_fails() -> None:
    assert_split({"v1": 205, "v3": 195}, {"v1": 50, "v3": 50})
    with pytest.raises(AssertionError, match="does not match the weights"):
        assert_split({"v1": 360, "v3": 40}, {"v1": 50, "v3": 50})
    with pytest.raises(AssertionError):
        assert_split({"v1": 400}, {"v1": 90, "v2": 10})  # a destination that never answered


def test_false_failure_rate_is_bounded() -> None:
    rng = random.Random(7)
    failures = 0
    for _ in range(300):
        counts = {"v1": 0, "v2": 0}
        for _ in range(200):
            counts["v1" if rng.random() < 0.9 else "v2"] += 1
        failures += not split_report(counts, {"v1": 90, "v2": 10}, alpha=0.01).ok
    assert failures <= 12  # alpha 0.01 over 300 trials: ~3 expected; far fewer than a broken test would give


def test_assert_fraction() -> None:
    assert_fraction(118, 400, 0.3)
    with pytest.raises(AssertionError, match="observed 10/400"):
        assert_fraction(10, 400, 0.3)


def test_draws_in_flight_come_back_in_the_order_they_were_sent() -> None:
    """Outcomes that finish out of order are still fed in send order, so a sequential test sees one fixed sequence."""
    counter = itertools.count()
    lock = threading.Lock()

    def draw() -> int:
        with lock:
            i = next(counter)
        time.sleep(0.002 * (i % 3))  # later sends often finish first
        return i

    with in_flight(draw, 4) as ordered:
        assert [ordered() for _ in range(40)] == list(range(40))


def test_a_parallel_sequential_split_keeps_its_decisions() -> None:
    rng = random.Random(11)
    lock = threading.Lock()

    def draw(p: float) -> str:
        with lock:
            return "v1" if rng.random() < p else "v2"

    assert_sequential_split(lambda: draw(0.9), {"v1": 90, "v2": 10}, parallel=4)
    with pytest.raises(AssertionError):
        assert_sequential_split(lambda: draw(0.8), {"v1": 90, "v2": 10}, parallel=4)
