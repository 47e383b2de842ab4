"""Typed objects -> Python source (`mesh import`): a policies module you can commit and edit."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from mesh.api.config import MeshConfig

_INDENT = "    "
ENVIRONMENTS = ("dev", "default")


def _expr(value: Any, depth: int) -> str:
    pad, inner = _INDENT * depth, _INDENT * (depth + 1)
    if isinstance(value, BaseModel):
        args = []
        for name, field in type(value).model_fields.items():
            v = getattr(value, name)
            default = field.get_default(call_default_factory=True)
            if v is None or v == default:
                continue
            args.append(f"{name}={_expr(v, depth + 1)}")
        flat = f"{type(value).__name__}({', '.join(args)})"
        if len(flat) + len(pad) <= 100 and "\n" not in flat:
            return flat
        return f"{type(value).__name__}(\n" + "".join(f"{inner}{a},\n" for a in args) + f"{pad})"
    if isinstance(value, list):
        items = [_expr(v, depth + 1) for v in value]
        flat = "[" + ", ".join(items) + "]"
        if len(flat) + len(pad) <= 100 and "\n" not in flat:
            return flat
        return "[\n" + "".join(f"{inner}{i},\n" for i in items) + f"{pad}]"
    if isinstance(value, dict):
        items = [f"{_expr(k, depth + 1)}: {_expr(v, depth + 1)}" for k, v in value.items()]
        flat = "{" + ", ".join(items) + "}"
        if len(flat) + len(pad) <= 100 and "\n" not in flat:
            return flat
        return "{\n" + "".join(f"{inner}{i},\n" for i in items) + f"{pad}}}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # double quotes, as ruff/black would write them
    return repr(value)


def to_python(config: MeshConfig, *, origin: str = "YAML") -> str:
    """A module exposing `build(env)`, usable as `mesh render --policies <dir>`."""
    used = {type(o).__name__ for o in [*config.services, *config.resources]}
    names: set[str] = set(used)

    def collect(v: Any) -> None:
        if isinstance(v, BaseModel):
            names.add(type(v).__name__)
            for n in type(v).model_fields:
                collect(getattr(v, n))
        elif isinstance(v, list):
            for x in v:
                collect(x)
        elif isinstance(v, dict):
            for x in v.values():
                collect(x)

    for o in [*config.services, *config.resources]:
        collect(o)
    imports = "".join(f"{_INDENT}{n},\n" for n in sorted(names | {"MeshConfig"}))
    body = [_INDENT * 2 + _expr(o, 2) + "," for o in [*config.services, *config.sorted_resources()]]
    return (
        f'"""Imported from {origin} by `mesh import`. Edit freely: this is ordinary typed Python."""\n\n'
        f"from mesh.api import (\n{imports})\n\n"
        f"ENVIRONMENTS = {ENVIRONMENTS!r}  # one config for all; `dev` is what mesh commands build by default\n\n\n"
        "def build(env: str) -> MeshConfig:\n"
        f"{_INDENT}return MeshConfig().add(\n" + "\n".join(body) + f"\n{_INDENT})\n"
    )
