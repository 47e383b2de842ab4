"""Reading YAML we did not write: bounded in size, alias expansion, nesting and object count; strict about
encoding and duplicate keys. Each refusal is an `ImportFailed` (exit 65) naming the limit and how to raise it.

PyYAML shares one node for every use of an alias, so a 4 KB file can stand for millions of objects once our
models copy them. The node graph is measured (with aliases expanded) before anything is constructed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from mesh.api._base import SourceLocation
from mesh.errors import ImportFailed


@dataclass(frozen=True)
class InputLimits:
    """Upper bounds for one input. Each can be raised with its environment variable."""

    # Pure-Python YAML reads ~1,000 objects a second here: the defaults keep a refusal within seconds.
    max_bytes: int = 8 * 1024 * 1024
    max_nodes: int = 500_000  # YAML nodes once aliases are expanded
    max_objects: int = 5_000  # documents (and items of a `kind: List`)
    max_depth: int = 64  # nesting of mappings and sequences

    ENV: tuple[tuple[str, str], ...] = (
        ("max_bytes", "MESH_MAX_INPUT_BYTES"),
        ("max_nodes", "MESH_MAX_YAML_NODES"),
        ("max_objects", "MESH_MAX_OBJECTS"),
        ("max_depth", "MESH_MAX_YAML_DEPTH"),
    )

    @classmethod
    def from_env(cls) -> InputLimits:
        values: dict[str, int] = {}
        for field, var in cls.ENV:
            raw = os.environ.get(var)
            if raw is None:
                continue
            try:
                values[field] = int(raw)
            except ValueError:
                raise ImportFailed(f"{var}={raw!r} is not a whole number") from None
        return cls(**values)  # type: ignore[arg-type]

    def env_var(self, field: str) -> str:
        return dict(self.ENV)[field]

    def exceeded(self, filename: str, line: int | None, field: str, what: str) -> ImportFailed:
        where = f"{filename}:{line}" if line is not None else filename
        limit = getattr(self, field)
        return ImportFailed(
            f"{where}: {what} exceeds the input limit of {limit:,}; nothing was imported",
            hint=f"split the input, or raise the limit with {self.env_var(field)}=N if the input is trusted",
        )


def decode(data: bytes, filename: str, limits: InputLimits) -> str:
    """UTF-8 bytes -> text, refusing oversized input before decoding and naming the line of a bad byte."""
    if len(data) > limits.max_bytes:
        raise limits.exceeded(filename, None, "max_bytes", f"input size ({len(data):,} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ImportFailed(
            f"{filename}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})",
            hint="YAML input must be UTF-8 text; re-encode the file (e.g. iconv -t UTF-8)",
        ) from None


def read_file(path: str | os.PathLike[str], limits: InputLimits) -> str:
    """A file's text; its size is checked from the directory entry before a byte is read."""
    name = os.fspath(path)
    try:
        size = os.stat(name).st_size
        if size > limits.max_bytes:
            raise limits.exceeded(name, None, "max_bytes", f"file size ({size:,} bytes)")
        with open(name, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as e:
        raise ImportFailed(f"cannot read {name}: {e.strerror}") from None
    return decode(data, name, limits)


class Document:
    """One object read from YAML, with the node tree kept so errors can name their line."""

    def __init__(self, data: Any, node: yaml.Node, filename: str) -> None:
        self.data = data
        self.node = node
        self.filename = filename

    def line_of(self, path: tuple[str | int, ...]) -> int:
        """The line of the deepest node along `path` that exists (1-based)."""
        node = self.node
        for key in path:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                nxt = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                nxt = node.value[key]
            if nxt is None:
                break
            node = nxt
        if isinstance(node, yaml.MappingNode) and node.value:
            node = node.value[0][0]  # a document's mark sits on its `---`; its first key is where it starts
        return int(node.start_mark.line) + 1

    def where(self, path: tuple[str | int, ...] = ()) -> SourceLocation:
        return SourceLocation(file=self.filename, line=self.line_of(path))


def path_text(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than the limit (PyYAML composes recursively)."""

    def __init__(self, text: str, filename: str, limits: InputLimits) -> None:
        super().__init__(text)
        self._filename = filename
        self._limits = limits
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > self._limits.max_depth:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise self._limits.exceeded(self._filename, mark.line + 1, "max_depth", "nesting depth")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Measure:
    """Expanded node count across a whole input, duplicate keys and recursive aliases, before construction."""

    def __init__(self, filename: str, limits: InputLimits) -> None:
        self.filename = filename
        self.limits = limits
        self.total = 0
        self._sizes: dict[int, int] = {}
        self._open: set[int] = set()

    def document(self, node: yaml.Node) -> None:
        self.total += self._size(node)
        if self.total > self.limits.max_nodes:
            line = node.start_mark.line + 1
            raise self.limits.exceeded(self.filename, line, "max_nodes", "the number of YAML nodes (aliases expanded)")

    def _size(self, node: yaml.Node) -> int:
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in self._open:
            raise ImportFailed(f"{self.filename}:{node.start_mark.line + 1}: a YAML alias refers to itself")
        self._open.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            self._no_duplicate_keys(node)
            for k, v in node.value:
                size += self._size(k) + self._size(v)
                if size > self.limits.max_nodes:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                size += self._size(v)
                if size > self.limits.max_nodes:
                    break
        self._open.discard(id(node))
        self._sizes[id(node)] = size
        if self.total + size > self.limits.max_nodes:
            line = node.start_mark.line + 1
            raise self.limits.exceeded(self.filename, line, "max_nodes", "the number of YAML nodes (aliases expanded)")
        return size

    def _no_duplicate_keys(self, node: yaml.MappingNode) -> None:
        seen: dict[tuple[str, str], int] = {}
        for k, _ in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                continue
            key = (k.tag, k.value)
            line = k.start_mark.line + 1
            if key in seen:
                raise ImportFailed(
                    f"{self.filename}:{line}: duplicate key {k.value!r} (first at line {seen[key]})",
                    hint="YAML parsers disagree on which one wins; keep exactly one",
                )
            seen[key] = line


def documents(text: str, filename: str, limits: InputLimits) -> Iterator[tuple[Any, yaml.Node]]:
    """(data, node) per non-empty document, every limit checked before the document is constructed."""
    if len(text) > limits.max_bytes:
        raise limits.exceeded(filename, None, "max_bytes", f"input size ({len(text):,} characters)")
    loader = _BoundedLoader(text, filename, limits)
    measure = _Measure(filename, limits)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            measure.document(node)
            data = loader.construct_document(node)
            if data is not None:
                yield data, node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ImportFailed(f"{filename}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    except RecursionError:
        raise limits.exceeded(filename, None, "max_depth", "nesting depth") from None
    finally:
        loader.dispose()
