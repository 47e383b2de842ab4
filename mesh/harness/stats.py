"""The statistics live in mesh.verify.stats (verification depends on them); the harness adds requests in flight.

`assert_sequential_split(draw, weights, parallel=4)` keeps four draws in flight and feeds their outcomes to the
sequential test in the order they were sent, so the test sees the same i.i.d. sequence as one draw at a time and
keeps its stated error rates (false failure <= 1e-6, power >= 0.99); draws still in flight when it decides are
discarded. Use it only where the outcome does not depend on concurrency (weighted routes do; least-request
balancing, rate limits and latency thresholds do not), hence serial by default.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from mesh.verify import stats as _stats
from mesh.verify.stats import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_DEVIATION,
    SequentialBinomial,
    SequentialSplit,
    SplitEvidence,
    SplitReport,
    assert_fraction,
    assert_split,
    binomial_p_value,
    power,
    required_sample_size,
    sequential_fraction,
    sequential_split,
    split_report,
)

T = TypeVar("T")


@contextmanager
def in_flight(draw: Callable[[], T], parallel: int) -> Iterator[Callable[[], T]]:
    """A draw that returns outcomes in the order they were sent while `parallel` draws run at once."""
    if parallel <= 1:
        yield draw
        return
    with ThreadPoolExecutor(parallel, thread_name_prefix="draw") as pool:
        pending: deque[Future[T]] = deque(pool.submit(draw) for _ in range(parallel))

        def next_outcome() -> T:
            outcome = pending.popleft().result()
            pending.append(pool.submit(draw))
            return outcome

        try:
            yield next_outcome
        finally:
            for f in pending:
                f.cancel()


def assert_sequential_split(
    draw: Callable[[], str],
    expected: Mapping[str, float],
    *,
    deviation: float = DEFAULT_DEVIATION,
    parallel: int = 1,
) -> SplitEvidence:
    """Assert the weights hold: false failure <= 1e-6, power >= 0.99 against `deviation` (5 points by default)."""
    with in_flight(draw, parallel) as ordered:
        return _stats.assert_sequential_split(ordered, expected, deviation=deviation)


def assert_sequential_fraction(
    draw: Callable[[], bool],
    p0: float,
    what: str = "fraction",
    *,
    deviation: float = DEFAULT_DEVIATION,
    parallel: int = 1,
) -> SplitEvidence:
    with in_flight(draw, parallel) as ordered:
        return _stats.assert_sequential_fraction(ordered, p0, what, deviation=deviation)


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_DEVIATION",
    "SequentialBinomial",
    "SequentialSplit",
    "SplitEvidence",
    "SplitReport",
    "assert_fraction",
    "assert_sequential_fraction",
    "assert_sequential_split",
    "assert_split",
    "binomial_p_value",
    "in_flight",
    "power",
    "required_sample_size",
    "sequential_fraction",
    "sequential_split",
    "split_report",
]
