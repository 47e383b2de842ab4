"""Load a policies package (typed Python) and build one environment's MeshConfig.

A policies package is a directory with `__init__.py` exposing `ENVIRONMENTS` (names) and
`build(env) -> MeshConfig`. Errors point at the user's file and line, not at our internals.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from pydantic import ValidationError

from mesh.api.config import MeshConfig
from mesh.errors import PolicyError

DEFAULT_POLICIES = "policies"


def _user_frame(tb: traceback.StackSummary, root: Path) -> str:
    for frame in reversed(tb):
        if Path(frame.filename).resolve().is_relative_to(root):
            return f"{os.path.relpath(frame.filename)}:{frame.lineno}"
    return str(root)


def load_module(path: str | os.PathLike[str] = DEFAULT_POLICIES) -> ModuleType:
    root = Path(path).resolve()
    init = root / "__init__.py" if root.is_dir() else root
    if not init.exists():
        raise PolicyError(
            f"no policies package at {path} (expected {init})",
            hint="pass --policies DIR pointing at a directory with __init__.py that defines build(env)",
        )
    # Import under its own name so `from policies.workloads import ...` works inside the package; forget any
    # earlier package of that name so a second policies directory does not see the first one's modules.
    name = root.stem if root.is_file() else root.name
    for cached in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[cached]
    sys.path.insert(0, str(root.parent))
    try:
        module = importlib.import_module(name)
    except Exception as e:
        where = _user_frame(traceback.extract_tb(e.__traceback__), root.parent if root.is_file() else root)
        raise PolicyError(f"{where}: cannot load policies: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(root.parent))
    if not callable(getattr(module, "build", None)):
        raise PolicyError(f"{init}: defines no build(env) function", hint="add `def build(env: str) -> MeshConfig`")
    return module


def environments(module: ModuleType) -> tuple[str, ...]:
    return tuple(getattr(module, "ENVIRONMENTS", ()))


def build(env: str, path: str | os.PathLike[str] = DEFAULT_POLICIES) -> MeshConfig:
    module = load_module(path)
    envs = environments(module)
    if envs and env not in envs:
        raise PolicyError(f"unknown environment {env!r} in {path}", hint=f"choose one of: {', '.join(envs)}")
    root = Path(path).resolve()
    try:
        config = module.build(env)
    except ValidationError as e:
        where = _user_frame(traceback.extract_tb(e.__traceback__), root)
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PolicyError(
            f"{where}: invalid {e.title}: {loc}: {first['msg']}"
            + (f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""),
            hint="fix the field named above; nothing was rendered or applied",
        ) from None
    except Exception as e:
        where = _user_frame(traceback.extract_tb(e.__traceback__), root)
        raise PolicyError(f"{where}: build({env!r}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(config, MeshConfig):
        raise PolicyError(f"{path}: build({env!r}) returned {type(config).__name__}, expected MeshConfig")
    return config
