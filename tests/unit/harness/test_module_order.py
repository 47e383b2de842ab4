"""The suite's module order (tests/conftest.py): longest first by the last run's seconds, e2e before unit where
unknown, each module's tests together and in file order (xdist hands whole modules out in this order)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.conftest import MODULE_SECONDS, pytest_collection_modifyitems


@dataclass
class _Item:
    nodeid: str


@dataclass
class _Cache:
    stored: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any) -> Any:
        return self.stored.get(key, default)


@dataclass
class _Config:
    cache: _Cache | None


COLLECTED = [
    "tests/unit/a.py::t1",
    "tests/unit/a.py::t2",
    "tests/e2e/b.py::t",
    "tests/unit/c.py::t",
    "tests/e2e/d.py::t1",
    "tests/e2e/d.py::t2",
]


def _ordered(cache: _Cache | None) -> list[str]:
    items = [_Item(n) for n in COLLECTED]
    pytest_collection_modifyitems(cast(pytest.Config, _Config(cache)), cast(list[pytest.Item], items))
    return [i.nodeid for i in items]


def test_modules_the_last_run_timed_go_longest_first_and_unknown_e2e_modules_before_unit_ones() -> None:
    cache = _Cache({MODULE_SECONDS: {"tests/unit/c.py": 60.0, "tests/e2e/d.py": 1.0}})
    assert _ordered(cache) == [
        "tests/unit/c.py::t",  # 60 s last run
        "tests/e2e/b.py::t",  # unknown e2e: a few seconds
        "tests/e2e/d.py::t1",  # 1 s last run
        "tests/e2e/d.py::t2",
        "tests/unit/a.py::t1",  # unknown unit: under a second
        "tests/unit/a.py::t2",
    ]


def test_without_a_cache_e2e_modules_come_first_in_file_order() -> None:
    expected = [n for n in COLLECTED if n.startswith("tests/e2e/")] + [
        n for n in COLLECTED if n.startswith("tests/unit")
    ]
    assert _ordered(None) == expected
    assert _ordered(_Cache({MODULE_SECONDS: "damaged"})) == expected
