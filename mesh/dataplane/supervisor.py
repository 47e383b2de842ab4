"""Supervisor: starts every process in parallel, waits for readiness, restarts what crashes, reaps on exit.

No process outlives us: children run under `setpriv --pdeathsig KILL` (so they die with the supervising thread
even on SIGKILL), in their own session (so Ctrl-C reaches only us and shutdown stays orderly).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mesh.dataplane.zygote import Forked

log = logging.getLogger("mesh.supervisor")


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    kind: str = "app"  # app | envoy
    # forks it from a pre-imported parent (`mesh.dataplane.zygote`) with this environment; None: it could not, and
    # the supervisor starts `argv` itself
    fork: Callable[[dict[str, str]], Forked | None] | None = None


Child = subprocess.Popen[bytes] | Forked


def _signal_group(proc: Child, sig: int) -> None:
    """The process and whatever it started: each runs in a session (and so a process group) of its own."""
    with contextlib.suppress(ProcessLookupError):
        if isinstance(proc, Forked):
            proc.signal_group(sig)
        else:
            os.killpg(proc.pid, sig)


@dataclass
class Managed:
    spec: ProcessSpec
    proc: Child | None = None
    restarts: int = 0  # over the supervisor's lifetime (what `mesh status` shows)
    streak: int = 0  # crashes since the process was last healthy for a while: what the backoff grows with
    ready: bool = False
    ready_at: float = 0.0
    last_exit: int | None = None
    next_start: float = 0.0


class ProcessStatus(BaseModel):
    """One supervised process as `mesh status` and `mesh logs` see it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    pid: int | None
    running: bool
    restarts: int
    log: str

    def __getitem__(self, field: str) -> Any:
        """`status["restarts"]`: callers written against the dict this used to be keep working."""
        return getattr(self, field)


class StartupFailed(RuntimeError):
    pass


def _log_tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


class Supervisor:
    """`backoff` seconds doubling per consecutive crash up to `backoff_max`; a process that stayed ready for
    `healthy_reset` seconds starts again from `backoff` (as systemd and the kubelet reset theirs)."""

    def __init__(
        self,
        on_event: Callable[[str], None] | None = None,
        *,
        backoff: float = 0.2,
        backoff_max: float = 5.0,
        healthy_reset: float = 10.0,
    ) -> None:
        self.backoff, self.backoff_max, self.healthy_reset = backoff, backoff_max, healthy_reset
        self._procs: dict[str, Managed] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._on_event = on_event or (lambda msg: log.info(msg))
        self._setpriv = shutil.which("setpriv")
        self.on_restart: Callable[[str], None] = lambda name: None
        # told when a process stops being ready (exited) and when it is ready again (after a restart)
        self.on_health: Callable[[str, bool], None] = lambda name, ready: None

    # --- lifecycle --------------------------------------------------------------------------------

    def _spawn(self, m: Managed) -> None:
        spec = m.spec
        argv = spec.argv
        if self._setpriv:
            argv = [self._setpriv, "--pdeathsig", "KILL", "--", *argv]
        env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false", **spec.env}
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        m.ready = False
        if spec.fork is not None:
            m.proc = spec.fork(env)
            if m.proc is not None:
                return
        with open(spec.log_path, "ab") as logf:
            m.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def start(
        self,
        specs: list[ProcessSpec],
        timeout: float = 30.0,
        progress: Callable[[int, int], None] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Start all in parallel; return once all are ready. `meanwhile` runs once they are spawned (work they need
        to become ready, done while they start up), before the ones that fork from a zygote, which may first wait
        for its imports. On failure everything started is stopped."""
        deadline = time.monotonic() + timeout
        pending = {s.name for s in specs}
        total = len(specs)
        try:
            self._spawn_all([s for s in specs if s.fork is None])
            if meanwhile is not None:
                meanwhile()
            self._spawn_all([s for s in specs if s.fork is not None])
            while pending:
                for name in sorted(pending):
                    m = self._procs[name]
                    assert m.proc is not None
                    code = m.proc.poll()
                    if code is not None:
                        raise StartupFailed(
                            f"{name} exited with code {code} while starting; last lines of {m.spec.log_path}:\n"
                            + _log_tail(m.spec.log_path)
                        )
                    if m.spec.ready():
                        m.ready, m.ready_at = True, time.monotonic()
                        pending.discard(name)
                        if progress:
                            progress(total - len(pending), total)
                if pending and time.monotonic() > deadline:
                    raise StartupFailed(
                        f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}; see logs under "
                        f"{self._procs[min(pending)].spec.log_path.parent}"
                    )
                if pending:
                    time.sleep(0.01)
        except BaseException:
            self.stop()
            raise
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
            self._monitor.start()

    def _spawn_all(self, specs: list[ProcessSpec]) -> None:
        with self._lock:
            for s in specs:
                m = Managed(s)
                self._procs[s.name] = m
                self._spawn(m)

    def _watch(self) -> None:
        """Restart crashed processes with exponential backoff (0.2 s doubling to 5 s, reset after a healthy interval).

        Readiness probes are HTTP calls that may take their full timeout: they run outside the lock, so
        `status()` (the control API's `mesh status`) never waits behind one."""
        while not self._stopping.wait(0.1):
            for m in self._recovering():
                if m.spec.ready():
                    with self._lock:
                        if m.proc is not None and m.proc.poll() is None and not m.ready:
                            m.ready, m.ready_at = True, time.monotonic()
                            self.on_health(m.spec.name, True)
            with self._lock:
                for m in self._procs.values():
                    if m.proc is None or self._stopping.is_set():
                        continue
                    code = m.proc.poll()
                    now = time.monotonic()
                    if code is not None and m.next_start == 0.0:
                        if m.ready and now - m.ready_at >= self.healthy_reset:
                            m.streak = 0  # it was healthy for a while: this crash is not part of a crash loop
                        delay = min(self.backoff_max, self.backoff * 2 ** min(m.streak, 16))
                        m.last_exit, m.ready = code, False
                        m.next_start = now + delay
                        self._on_event(f"{m.spec.name} exited ({code}); restarting in {delay:.1f}s")
                        self.on_health(m.spec.name, False)
                    elif code is not None and now >= m.next_start:
                        m.restarts += 1
                        m.streak += 1
                        m.next_start = 0.0
                        self._spawn(m)
                        self.on_restart(m.spec.name)

    def _recovering(self) -> list[Managed]:
        """Running processes not yet ready again (restarted ones): the ones whose readiness to probe."""
        with self._lock:
            if self._stopping.is_set():
                return []
            return [m for m in self._procs.values() if m.proc is not None and m.proc.poll() is None and not m.ready]

    def stop(self, grace: float = 3.0) -> None:
        self._stopping.set()
        with self._lock:
            procs = [m.proc for m in self._procs.values() if m.proc is not None]
        for p in procs:
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=1.0)

    # --- inspection -------------------------------------------------------------------------------

    def status(self) -> list[ProcessStatus]:
        with self._lock:
            return [
                ProcessStatus(
                    name=m.spec.name,
                    kind=m.spec.kind,
                    pid=m.proc.pid if m.proc else None,
                    running=bool(m.proc and m.proc.poll() is None),
                    restarts=m.restarts,
                    log=str(m.spec.log_path),
                )
                for m in sorted(self._procs.values(), key=lambda m: m.spec.name)
            ]

    def pids(self) -> list[int]:
        with self._lock:
            return [m.proc.pid for m in self._procs.values() if m.proc and m.proc.poll() is None]

    def kill(self, name: str) -> None:
        """Crash a process on purpose (tests of restart behaviour)."""
        with self._lock:
            m = self._procs[name]
            assert m.proc is not None
            m.proc.kill()

    def wait_ready(self, name: str, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                m = self._procs[name]
                alive = m.proc is not None and m.proc.poll() is None
            if alive and check():
                return True
            time.sleep(0.02)
        return False
