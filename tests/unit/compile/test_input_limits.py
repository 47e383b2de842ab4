"""Bounded YAML reading: aliases, depth, object count, duplicate keys and encoding, checked before construction."""

from __future__ import annotations

import time

import pytest

from mesh.compile import load_yaml
from mesh.compile.yamlsafe import InputLimits, decode
from mesh.errors import ImportFailed

DR = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d{i}}}\nspec: {{host: a}}\n"


def test_alias_expansion_is_measured_before_anything_is_built() -> None:
    levels = ["a0: &a0 [x, y, z, w, v, u, t, s, r, q]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)
    ]
    start = time.monotonic()
    with pytest.raises(ImportFailed, match=r"aliases expanded.*limit of 500,000"):
        load_yaml("\n".join(levels) + "\n", "bomb.yaml")
    assert time.monotonic() - start < 2


def test_a_recursive_alias_is_an_error() -> None:
    with pytest.raises(ImportFailed, match="refers to itself"):
        load_yaml("&a [*a]\n", "r.yaml")


def test_limits_can_be_raised_for_trusted_input(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "---\n".join(DR.format(i=i) for i in range(5))
    with pytest.raises(ImportFailed, match="MESH_MAX_OBJECTS"):
        load_yaml(text, limits=InputLimits(max_objects=4))
    monkeypatch.setenv("MESH_MAX_OBJECTS", "4")
    with pytest.raises(ImportFailed, match="limit of 4"):
        load_yaml(text)
    monkeypatch.setenv("MESH_MAX_OBJECTS", "5")
    assert len(load_yaml(text).resources) == 5


def test_depth_limit_names_the_line() -> None:
    with pytest.raises(ImportFailed, match=r"x\.yaml:3: nesting depth exceeds the input limit of 4"):
        load_yaml("a:\n  b:\n    c: [[[1]]]\n", "x.yaml", limits=InputLimits(max_depth=4))


def test_duplicate_keys_name_both_lines() -> None:
    with pytest.raises(ImportFailed, match=r"x\.yaml:4: duplicate key 'name' \(first at line 3\)"):
        load_yaml("kind: DestinationRule\nmetadata:\n  name: a\n  name: b\n", "x.yaml")


def test_bad_utf8_names_its_line() -> None:
    with pytest.raises(ImportFailed, match=r"x\.yaml:2: not UTF-8"):
        decode(b"a: 1\nb: \xff\n", "x.yaml", InputLimits())


def test_metadata_keys_written_by_the_server_are_accepted_but_others_are_not() -> None:
    served = DR.format(i=0).replace("metadata: {name: d0}", "metadata: {name: d0, uid: x, resourceVersion: '1'}")
    assert len(load_yaml(served).resources) == 1
    with pytest.raises(ImportFailed, match=r"metadata\.nmae: unknown field"):
        load_yaml(DR.format(i=0).replace("metadata: {name: d0}", "metadata: {name: d0, nmae: x}"))
