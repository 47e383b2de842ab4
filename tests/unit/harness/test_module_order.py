"""The suite's module order (tests/conftest.py): longest first by the last run's seconds, e2e before unit where
unknown, each module's tests together and in file order (xdist hands whole modules out in this order)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

import tests.conftest
from tests.conftest import MODULE_SECONDS, pytest_collection_modifyitems, pytest_sessionfinish


@dataclass
class _Item:
    nodeid: str


@dataclass
class _Cache:
    stored: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any) -> Any:
        return self.stored.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.stored[key] = value


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


def test_a_run_averages_each_module_with_its_last_figure_and_forgets_deleted_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tests").mkdir()
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / "tests" / name).touch()
    last = {"tests/a.py": 10.0, "tests/c.py": 4.0, "tests/gone.py": 3.0}
    cache = _Cache({MODULE_SECONDS: last})
    monkeypatch.setattr(tests.conftest, "_measured", defaultdict(float, {"tests/a.py": 20.0, "tests/b.py": 1.0}))
    session = SimpleNamespace(config=SimpleNamespace(cache=cache, rootpath=tmp_path))
    pytest_sessionfinish(cast(pytest.Session, session))
    assert cache.stored[MODULE_SECONDS] == {"tests/a.py": 15.0, "tests/b.py": 1.0, "tests/c.py": 4.0}
