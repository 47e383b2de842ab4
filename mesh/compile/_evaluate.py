"""The sandboxed side of `evaluate_policies`: `python -I -m mesh.compile._evaluate PATH ENV RESULT`.

Limits itself first (address space, CPU time), builds in-process, and writes only JSON data to RESULT.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from typing import Any


def _limit(memory_mb: int, cpu_s: int) -> None:
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def main(path: str, env: str, result: str) -> int:
    limits = json.loads(os.environ.get("MESH_EVAL_LIMITS", "{}"))
    _limit(int(limits.get("memory_mb", 1024)), int(limits.get("cpu_s", 31)))
    from mesh.compile.policies import PolicyExit, PolicyMemory, PolicyTimeout, build, to_data
    from mesh.errors import PolicyError

    out: dict[str, Any]
    try:
        out = to_data(build(env, path, timeout=0))
    except MemoryError:
        out = {"error": {"kind": "memory", "message": f"{path}: build({env!r}) ran out of memory"}}
    except PolicyError as e:
        kind = {PolicyExit: "exit", PolicyTimeout: "timeout", PolicyMemory: "memory"}.get(type(e), "policy")
        out = {"error": {"kind": kind, "message": e.args[0], "hint": e.hint}}
    except BaseException as e:  # everything the policies do must become data
        summary = "".join(traceback.format_exception_only(type(e), e)).strip()
        frames = traceback.extract_tb(e.__traceback__)[-3:]
        where = "; ".join(f"{os.path.relpath(f.filename)}:{f.lineno}" for f in frames)
        out = {"error": {"kind": "crash", "message": f"{path}: {summary} (at {where})"}}
    with open(result, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
