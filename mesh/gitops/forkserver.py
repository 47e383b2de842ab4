"""A pre-started sandbox: one `python -I` process, started with a clean environment, that has already imported what
policies need (pydantic, mesh.api, the compiler) and forks a fresh child per evaluation.

Starting an interpreter and importing the typed API costs ~1-1.5 s per render; a fork costs milliseconds. The
isolation is the same as a fresh interpreter's: each evaluation is its own process (a child of this server, never
the reconciler), under the same rlimits (address space, CPU, no core) applied in the child, with the server's clean
environment (the reconciler's secrets were never in it) and a per-request HOME, killed at the wall-clock limit by
the server, and whatever it does (raise, exit, signal) comes back as a status. The server itself never runs policy
code, so every child starts from the same pristine state.

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
from typing import Any


def _preload() -> None:
    import mesh.api
    import mesh.compile.importer
    import mesh.compile.policies
    import mesh.gitops.evaluate
    import mesh.gitops.rollout
    import mesh.verify.probes  # noqa: F401


def _child(req: dict[str, Any]) -> None:
    """In the forked child: limits, a clean stdio and HOME, then the evaluation; never returns."""
    code = 70
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.chdir(req["root"])
        os.environ["HOME"] = req["home"]
        memory, cpu = int(req["memory"]), int(req["timeout"]) + 1
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        from mesh.gitops.evaluate import main

        code = main(req["out"], req["env"], req["path"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def _evaluate(req: dict[str, Any]) -> dict[str, Any]:
    pid = os.fork()
    if pid == 0:
        _child(req)
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], float(req["timeout"]))
        timed_out = not ready
        if timed_out:
            try:
                os.killpg(pid, signal.SIGKILL)  # the child and anything it started
            except ProcessLookupError:
                os.kill(pid, signal.SIGKILL)  # killed before its setsid
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}


def serve() -> int:
    _preload()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        reply = _evaluate(json.loads(line))
        reply["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
