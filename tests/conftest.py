"""Shared fixtures for every test layer, and the suite's module order.

`make test` runs each module whole on one xdist worker (`--dist loadscope --no-loadscope-reorder`), handing modules
out in collection order. Collected in file order, the few long e2e modules (a reconcile loop, a staged canary, a
certificate lifetime) came last and one worker ran them alone while the other idled, so modules are ordered longest
first: by the seconds each took in the last run (kept in pytest's cache), and by layer (e2e before unit) for a
module the cache does not know yet, as on a clean clone.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MODULE_SECONDS = "meshops/module-seconds"  # pytest cache key: {module node id: seconds} from the last run
UNKNOWN_E2E_SECONDS = 5.0  # a guess for an e2e module the cache does not know: most start processes
UNKNOWN_SECONDS = 0.5

_measured: defaultdict[str, float] = defaultdict(float)


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _expected_seconds(module: str, known: dict[str, float]) -> float:
    if module in known:
        return known[module]
    return UNKNOWN_E2E_SECONDS if module.startswith("tests/e2e/") else UNKNOWN_SECONDS


def _known_seconds(config: pytest.Config) -> dict[str, float]:
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    stored = cache.get(MODULE_SECONDS, {}) if cache is not None else {}
    return {k: float(v) for k, v in stored.items() if isinstance(v, int | float)} if isinstance(stored, dict) else {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest modules first (a stable sort: each module's tests stay together and in file order). Every xdist
    worker computes the same order from the same cache, as xdist requires."""
    known = _known_seconds(config)
    first_seen = {m: i for i, m in reversed(list(enumerate(_module(item.nodeid) for item in items)))}
    items.sort(key=lambda item: (-_expected_seconds(_module(item.nodeid), known), first_seen[_module(item.nodeid)]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _measured[_module(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Record each module's seconds (setup + call + teardown of its tests) for the next run's order. Under xdist only
    the controller writes, having received every worker's reports; a partial run (-k, one file) updates the modules
    it ran and keeps the others; modules whose file is gone are dropped."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _measured:
        return
    known = {m: s for m, s in _known_seconds(session.config).items() if (session.config.rootpath / m).exists()}
    for module, seconds in _measured.items():  # averaged with the last figure: one run on a busy machine is noisy
        known[module] = round((known[module] + seconds) / 2 if module in known else seconds, 2)
    cache.set(MODULE_SECONDS, known)
