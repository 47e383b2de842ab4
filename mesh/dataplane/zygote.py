"""The parent's side of the sample app's zygote (`mesh.sampleapp.zygote`): one pre-imported process that forks a
child per sample-app workload, so seven apps cost one interpreter start instead of seven.

The supervisor treats a forked child like a process it spawned (`Forked` answers poll/wait/kill as Popen does);
signals go through the zygote, which signals only children it has not reaped, so a pid is never reused under us.
When the zygote is gone (it crashed), `spawn` answers None and the supervisor starts the app on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("mesh.zygote")

MODULE = "mesh.sampleapp"  # the app the zygote runs: `{python} -m mesh.sampleapp [ARGS]`
READY_TIMEOUT = 20.0  # for the zygote's imports; a loaded machine stretches them


def forkable(argv: list[str]) -> list[str] | None:
    """The sample app's arguments when `argv` runs it with this interpreter (what the zygote can fork), else None."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1:3] == ["-m", MODULE]:
        return argv[3:]
    return None


class Forked:
    """A child the zygote forked, answering as `subprocess.Popen` does for the supervisor."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.zygote.changed:
            while self.returncode is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(f"{MODULE} (pid {self.pid})", timeout or 0.0)
                self.zygote.changed.wait(left)
            return self.returncode

    def signal_group(self, sig: int) -> None:
        """Its process group (it leads one: the zygote made it a session leader), as `os.killpg` on a Popen's pid."""
        if self.returncode is None:
            self.zygote.send({"signal": self.pid, "sig": int(sig)})

    def send_signal(self, sig: int) -> None:
        self.signal_group(sig)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    def terminate(self) -> None:
        self.signal_group(signal.SIGTERM)


class Zygote:
    """Started once per mesh (`start`, early: its imports overlap the mesh's own work), stopped after the apps."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.changed = threading.Condition()
        self._children: dict[int, Forked] = {}
        self._started: dict[int, Forked | str] = {}  # request id -> the child, or why the zygote could not fork
        self._ready = False
        self._next = 0
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> Zygote:
        argv = [sys.executable, "-m", f"{MODULE}.zygote"]
        setpriv = shutil.which("setpriv")
        if setpriv:  # it dies with us even on SIGKILL, and its children with it
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as logf:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, start_new_session=True
            )
        self._reader = threading.Thread(target=self._read, name="zygote", daemon=True)
        self._reader.start()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        with self._send_lock, contextlib.suppress(OSError, ValueError):  # a dead zygote: its children died with it
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()

    def spawn(self, argv: list[str], env: dict[str, str], log_path: Path, netns: str | None = None) -> Forked | None:
        """Fork the app `argv` names (`forkable`) with exactly `env`; None when the zygote cannot (not running,
        failed to import, or the fork failed): the caller starts the process itself."""
        args = forkable(argv)
        if args is None or not self._wait_ready():
            return None
        with self.changed:
            self._next += 1
            rid = self._next
        self.send({"start": rid, "argv": args, "env": env, "log": str(log_path), "netns": netns})
        deadline = time.monotonic() + READY_TIMEOUT
        with self.changed:
            while rid not in self._started and self.alive and time.monotonic() < deadline:
                self.changed.wait(0.1)
            answer = self._started.pop(rid, None)
        if not isinstance(answer, Forked):
            log.warning("the zygote did not start %s (%s): starting it on its own", log_path.name, answer)
            return None
        return answer

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        with self.changed:
            while not self._ready and self.alive and time.monotonic() < deadline:
                self.changed.wait(0.1)
            return self._ready and self.alive

    def _read(self) -> None:
        """The zygote's answers and exit reports; at EOF (it exited) its children are gone too (parent-death signal)."""
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.changed:
                if "ready" in message:
                    self._ready = True
                elif "started" in message:  # before any exit of that child: the zygote answers, then reaps
                    rid = int(message["started"])
                    if "pid" in message:
                        child = self._children[int(message["pid"])] = Forked(self, int(message["pid"]))
                        self._started[rid] = child
                    else:
                        self._started[rid] = str(message.get("error"))
                elif "exited" in message:
                    exited = self._children.pop(int(message["exited"]), None)
                    if exited is not None:
                        exited.returncode = int(message["code"])
                self.changed.notify_all()
        self._orphaned()

    def _orphaned(self) -> None:
        """The zygote is gone: its children were sent SIGKILL. Wait (bounded) until each is really gone, so a
        restart never meets its predecessor, then report them exited."""
        with self.changed:
            left = [c for c in self._children.values() if c.returncode is None]
        for child in left:
            _wait_gone(child.pid, timeout=2.0)
        with self.changed:
            for child in left:
                child.returncode = -signal.SIGKILL
            self._children.clear()
            self._ready = False
            self.changed.notify_all()

    def stop(self) -> None:
        """After the supervisor stopped the apps: closing its stdin makes the zygote stop what is left and exit."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with self._send_lock, contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


_prestarted: Zygote | None = None


def prestart(log_path: Path) -> None:
    """Start the zygote now, before the caller imports the control plane, so its own imports overlap them; the
    mesh started next in this process `adopt`s it."""
    global _prestarted
    if _prestarted is None:
        _prestarted = Zygote(log_path).start()


def adopt(log_path: Path) -> Zygote:
    """The zygote `prestart` started for this log, else a new one."""
    global _prestarted
    zygote, _prestarted = _prestarted, None
    if zygote is not None and zygote.log_path.resolve() == log_path.resolve() and zygote.alive:
        return zygote
    if zygote is not None:
        zygote.stop()
    return Zygote(log_path).start()


def discard() -> None:
    """Stop a prestarted zygote no mesh adopted (the start failed before it, or no workload runs the sample app)."""
    global _prestarted
    zygote, _prestarted = _prestarted, None
    if zygote is not None:
        zygote.stop()


def _wait_gone(pid: int, timeout: float) -> None:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return  # already gone
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
