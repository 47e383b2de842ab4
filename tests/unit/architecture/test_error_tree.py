"""`mesh/errors.py` draws the one exception tree in its docstring: every error class defined there is drawn under its
parent, and each `(exit N)` drawn is the code the class exits with."""

from __future__ import annotations

import inspect
import re

import mesh.errors

TREE_LINE = re.compile(r"^(?P<indent>[│├└─ ]*)(?P<name>[A-Z]\w+)\b(?P<rest>.*)$")


def _drawn() -> list[tuple[int, str, int | None]]:
    """(depth, class name, exit code if drawn) for each line of the docstring's tree."""
    doc = mesh.errors.__doc__ or ""
    out = []
    for line in doc.splitlines():
        m = TREE_LINE.match(line)
        if not m or not (m["indent"] or m["name"] == "MeshError"):
            continue
        code = re.search(r"\(exit (\d+)\)", m["rest"])
        out.append((len(m["indent"]) // 4, m["name"], int(code[1]) if code else None))
    return out


def _defined() -> dict[str, type[mesh.errors.MeshError]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(mesh.errors, inspect.isclass)
        if issubclass(cls, mesh.errors.MeshError) and cls.__module__ == "mesh.errors"
    }


def test_every_error_class_is_drawn_once_under_its_parent() -> None:
    drawn = _drawn()
    names = [name for _, name, _ in drawn]
    assert sorted(names) == sorted(_defined()), "mesh/errors.py's docstring tree and its classes differ"
    parents: list[str] = []
    for depth, name, _ in drawn:
        del parents[depth:]
        if parents:
            assert parents[-1] in {b.__name__ for b in _defined()[name].__bases__}, (name, parents[-1])
        parents.append(name)


def test_the_exit_codes_drawn_are_the_ones_raised() -> None:
    defined = _defined()
    for _, name, code in _drawn():
        if code is not None:
            assert defined[name].exit_code == code, name
