"""The sample app's zygote: one process that imported the server once and forks a child per workload.

Seven `python -m mesh.sampleapp` processes each pay the interpreter's start and the imports (~45 ms CPU); a fork of
this process pays neither (a few ms). Every child is still a process of its own, in its own session, with its own
log, environment and pid; it dies with the zygote (parent-death signal), and the zygote with the mesh.

The parent speaks JSON lines on the zygote's stdin/stdout (`mesh.dataplane.zygote` is that side):
  -> {"start": ID, "argv": [...], "env": {...}, "log": PATH, "netns": NAME|null}   <- {"started": ID, "pid": PID}
                                                                                    or {"started": ID, "error": TEXT}
  -> {"signal": PID, "sig": N}   the child's process group, only while the zygote has not reaped it (no pid reuse)
                                 <- {"exited": PID, "code": CODE} when a child ends (Popen's returncode convention)
EOF on stdin: every child is terminated (then killed after a grace period) and the zygote exits.
Standard library only, like the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import sys
import time
import traceback
from typing import Any, BinaryIO

from mesh.sampleapp import server

_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_REC, _MS_SLAVE, _MS_BIND = 0x4000, 0x80000, 0x1000
NETNS_DIR = "/var/run/netns"
NETNS_ETC = "/etc/netns"
GRACE = 3.0  # seconds between SIGTERM and SIGKILL at shutdown, as the supervisor's stop

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_pod(netns: str) -> None:
    """What `ip netns exec NAME` does for the app: its pod's network namespace, and a mount namespace of its own in
    which the pod's files (/etc/netns/NAME/hosts, resolv.conf) are bound over /etc's, so names resolve as in the pod."""
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        _check(_libc.setns(fd, _CLONE_NEWNET), f"setns {netns}")
    finally:
        os.close(fd)
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"", b"/", b"none", _MS_SLAVE | _MS_REC, None), "mount --make-rslave /")
    etc = os.path.join(NETNS_ETC, netns)
    for name in sorted(os.listdir(etc)) if os.path.isdir(etc) else []:
        src, dst = os.path.join(etc, name).encode(), os.path.join("/etc", name).encode()
        _check(_libc.mount(src, dst, b"none", _MS_BIND, None), f"bind {etc}/{name} over /etc/{name}")


def _child(request: dict[str, Any], zygote: int) -> None:
    """In the forked child: become the workload (session, parent-death signal, log, environment, pod), run it."""
    code = 1
    try:
        os.setsid()
        _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != zygote:  # the zygote died before the signal was armed
            os._exit(1)
        # the dispositions a fresh interpreter starts with (SIGPIPE ignored, so a peer that hung up is an error
        # the server handles rather than the end of the process; Ctrl-C a KeyboardInterrupt), not the zygote's
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 1 << 16)  # nothing of the zygote's (its pipes, the other children's) stays open here
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (fd 0 lives as long as the process)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("netns"):
            enter_pod(request["netns"])
        argv = list(request["argv"])
        sys.argv = ["mesh.sampleapp", *argv]
        server.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Zygote:
    """The zygote's loop: start children on request, report their exits, signal only children not yet reaped."""

    def __init__(self, requests: int, replies: BinaryIO) -> None:
        self.requests, self.replies = requests, replies
        self.children: set[int] = set()
        self._pending = b""  # a request line not yet complete

    def reply(self, message: dict[str, Any]) -> None:
        self.replies.write(json.dumps(message).encode() + b"\n")
        self.replies.flush()

    def handle(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            request = json.loads(line)
            if "start" in request:
                self.start(request)
            elif "signal" in request:
                self.signal(int(request["signal"]), int(request["sig"]))

    def start(self, request: dict[str, Any]) -> None:
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            self.reply({"started": request["start"], "error": str(e)})
            return
        if pid == 0:
            _child(request, zygote)
        self.children.add(pid)
        self.reply({"started": request["start"], "pid": pid})

    def signal(self, pid: int, sig: int) -> None:
        if pid in self.children:  # not reaped: the pid (and its group, the child leads it) is still this child's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.reply({"exited": pid, "code": _returncode(status)})

    def shutdown(self) -> None:
        """Every child terminated; the stubborn ones killed after the grace period; all reaped."""
        for pid in list(self.children):
            self.signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        for pid in list(self.children):
            self.signal(pid, signal.SIGKILL)
        while self.children:
            pid, status = os.waitpid(-1, 0)
            self.children.discard(pid)
            with contextlib.suppress(OSError):
                self.reply({"exited": pid, "code": _returncode(status)})

    def run(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD is delivered (and wakes us)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the mesh: it stops us by closing our stdin
        selector = selectors.DefaultSelector()
        selector.register(self.requests, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        self.reply({"ready": os.getpid()})
        try:
            while True:
                for key, _ in selector.select():
                    if key.fileobj == wake_r:
                        os.read(wake_r, 512)
                        self.reap()
                        continue
                    data = os.read(self.requests, 1 << 16)
                    if not data:
                        return
                    self.handle(data)
                self.reap()
        finally:
            self.shutdown()


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main() -> None:
    Zygote(sys.stdin.fileno(), sys.stdout.buffer).run()


if __name__ == "__main__":
    main()
