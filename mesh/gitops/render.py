"""Policies from git -> a typed MeshConfig, evaluated in a separate, limited interpreter.

A policies module is code anyone with push access wrote. It runs in `python -I` (no user site, no PYTHON* env),
with a clean environment (no tokens, webhook secrets or cloud credentials of the reconciler), a wall-clock and CPU
time limit and an address-space limit. Raising, hanging, exiting or exhausting memory marks that commit failed with
the cause; the reconciler itself keeps running.
"""

from __future__ import annotations

import atexit
import json
import resource
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from mesh.api._base import SourceLocation
from mesh.api.config import MeshConfig
from mesh.api.workloads import Service
from mesh.compile.importer import load_yaml
from mesh.errors import RenderFailed
from mesh.gitops.rollout import Rollout
from mesh.verify.probes import Probe

DEFAULT_TIMEOUT = 20.0
DEFAULT_MEMORY = 1 << 30  # 1 GiB of address space

_PROBES = TypeAdapter(list[Probe])
_ROLLOUTS = TypeAdapter(list[Rollout])


@dataclass
class Rendered:
    config: MeshConfig
    probes: list[Probe] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    ms: float = 0.0


@dataclass(frozen=True)
class Limits:
    timeout: float = DEFAULT_TIMEOUT
    memory: int = DEFAULT_MEMORY


def _limit(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
    cpu = int(limits.timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _clean_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "PYTHONDONTWRITEBYTECODE": "1"}


class ForkServer:
    """The pre-started sandbox (mesh.gitops.forkserver): started once with `python -I` and a clean environment,
    restarted when it died; one evaluation at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._home = tempfile.TemporaryDirectory(prefix="meshops-sandbox-")
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "mesh.gitops.forkserver"],
            cwd=self._home.name,
            env=_clean_env(self._home.name),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        if "ready" not in json.loads(proc.stdout.readline() or "{}"):
            proc.kill()
            proc.wait()
            raise OSError("the sandbox fork server did not start")
        self._proc = proc
        return proc

    def warm(self) -> None:
        with self._lock:
            self._start()

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            reply = proc.stdout.readline()
            if not reply:
                proc.wait()
                raise OSError("the sandbox fork server exited")
            return dict(json.loads(reply))

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._home.cleanup()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def fork_server() -> ForkServer:
    global _server
    with _server_lock:
        if _server is None:
            _server = ForkServer()
            atexit.register(_server.close)
        return _server


def _timed_out(path: str, env: str, limits: Limits) -> RenderFailed:
    return RenderFailed(
        f"{path}: build({env!r}) did not finish within {limits.timeout:g}s (killed)",
        hint="a loop that never ends, or a network call at import time; policies must be pure",
    )


def render(root: Path, path: str, env: str, limits: Limits = Limits(), *, fork: bool = True) -> Rendered:
    """Evaluate the policies at `root/path` for `env` in the sandbox; raise RenderFailed with the cause.

    `fork`: a child of the pre-started fork server (fast); otherwise a fresh interpreter (the same limits)."""
    import time

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meshops-render-") as tmp:
        out = Path(tmp, "out.json")
        if fork:
            err = Path(tmp, "stderr")
            request: dict[str, Any] = {
                "root": str(root.resolve()),
                "out": str(out),
                "env": env,
                "path": path,
                "home": tmp,
            }
            request |= {"stderr": str(err), "timeout": limits.timeout, "memory": limits.memory}
            reply = fork_server().evaluate(request)
            if reply["timed_out"]:
                raise _timed_out(path, env, limits)
            stderr = err.read_text(errors="replace") if err.exists() else ""
            proc = subprocess.CompletedProcess(["fork"], int(reply["returncode"]), "", stderr)
            payload = _payload(out, proc, path, env, limits)
            rendered = _typed(payload, path)
            rendered.ms = (time.perf_counter() - t0) * 1000
            return rendered
        cmd = [sys.executable, "-I", "-m", "mesh.gitops.evaluate", str(out), env, path]
        try:
            proc = subprocess.run(
                cmd,
                cwd=root,
                env=_clean_env(tmp),
                capture_output=True,
                text=True,
                timeout=limits.timeout,
                preexec_fn=lambda: _limit(limits),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise _timed_out(path, env, limits) from None
        payload = _payload(out, proc, path, env, limits)
    rendered = _typed(payload, path)
    rendered.ms = (time.perf_counter() - t0) * 1000
    return rendered


def _payload(out: Path, proc: subprocess.CompletedProcess[str], path: str, env: str, limits: Limits) -> dict[str, Any]:
    tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
    if out.exists() and out.stat().st_size:
        data: dict[str, Any] = json.loads(out.read_text())
        if "error" in data:
            error = str(data["error"])
            if "MemoryError" in error:
                error = error.split("\n")[0] + f" (exhausted its memory limit of {limits.memory >> 20} MiB)"
            raise RenderFailed(error, hint="fix the policies at that commit; the last good config keeps serving")
        if proc.returncode == 0:
            return data
    if proc.returncode < 0:
        cause = {9: "killed (CPU time limit)", 24: "CPU time limit exceeded", 6: "aborted"}.get(
            -proc.returncode, f"killed by signal {-proc.returncode}"
        )
        raise RenderFailed(f"{path}: build({env!r}) {cause}\n{tail}")
    if "MemoryError" in proc.stderr:
        raise RenderFailed(f"{path}: build({env!r}) exhausted its memory limit ({limits.memory >> 20} MiB)")
    raise RenderFailed(f"{path}: build({env!r}) exited with status {proc.returncode} before returning a config\n{tail}")


def _typed(payload: dict[str, Any], path: str) -> Rendered:
    try:
        services = [Service.model_validate(s) for s in payload["services"]]
        manifests = [r["manifest"] for r in payload["resources"]]
        imported = load_yaml(yaml.safe_dump_all(manifests, sort_keys=False), f"{path} (rendered)")
        for res, item in zip(imported.sorted_resources(), payload["resources"], strict=True):
            if item["source"]:
                res.located(SourceLocation.model_validate(item["source"]))
        probes = _PROBES.validate_python(payload.get("probes", []))
        rollouts = _ROLLOUTS.validate_python(payload.get("rollouts", []))
    except (ValidationError, KeyError, ValueError) as e:
        raise RenderFailed(f"{path}: the policies returned something that is not a valid config: {e}") from None
    config = MeshConfig(services=services, resources=imported.resources)
    return Rendered(config, probes, rollouts)


def config_to_json(config: MeshConfig) -> str:
    """The durable form of a config (what the state store keeps as the last applied one)."""
    return json.dumps(
        {
            "services": [s.model_dump(mode="json") for s in config.services],
            "resources": [{"manifest": r.to_manifest(), "source": None} for r in config.sorted_resources()],
        },
        sort_keys=True,
    )


def config_from_json(text: str) -> MeshConfig:
    return _typed(json.loads(text), "state").config


def keep_workloads(config: MeshConfig, live: MeshConfig) -> MeshConfig:
    """A YAML source that declares no workloads manages policies only: keep the services that run."""
    if config.services:
        return config
    return MeshConfig(services=list(live.services), resources=list(config.resources))


__all__ = ["Limits", "Rendered", "keep_workloads", "render"]
