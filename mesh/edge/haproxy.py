"""HAProxy, the process: Debian's binary in master-worker mode (`-W`), validated before every (re)load.

A reload is SIGUSR2 to the master: it re-reads the file and starts a new worker, which takes the listening sockets
over from the old one through the admin socket (`expose-fd listeners`); the old worker finishes its connections.
No connection is refused or dropped, and an invalid file never reaches the master (checked with `haproxy -c`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mesh.edge.errors import EdgeConfigRejected, EdgeUnavailable

INSTALL_HINT = (
    "install HAProxy >= 2.4: `sudo apt-get install haproxy` (Debian/Ubuntu), `brew install haproxy` (macOS); "
    "or set MESH_HAPROXY to the binary"
)


def haproxy_binary() -> str:
    override = os.environ.get("MESH_HAPROXY")
    path = (
        override or shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else "")
    )
    if not path or not os.access(path, os.X_OK):
        raise EdgeUnavailable("the edge needs HAProxy and no `haproxy` binary was found", hint=INSTALL_HINT)
    return path


def validate(config_path: Path) -> None:
    """`haproxy -c`: the whole file is checked (syntax, certificates, addresses) without binding anything."""
    proc = subprocess.run([haproxy_binary(), "-c", "-f", str(config_path)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        detail = "\n".join(
            "    " + line
            for line in (proc.stderr + proc.stdout).splitlines()
            if "[ALERT]" in line or "[WARNING]" in line
        )
        raise EdgeConfigRejected(
            f"HAProxy rejected the edge configuration {config_path}:\n{detail or proc.stderr.strip()}",
            hint="the lines above name the offending directive; the running edge keeps its previous configuration",
        )


def command(config_path: Path, master_socket: Path, pid_file: Path) -> list[str]:
    """Foreground master (`-db`), master-worker (`-W`), master CLI on a Unix socket (`-S`)."""
    return [
        haproxy_binary(),
        "-W",
        "-db",
        "-f",
        str(config_path),
        "-S",
        f"{master_socket},mode,600",
        "-p",
        str(pid_file),
    ]


def ask(path: Path, command: str, timeout: float = 2.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)  # end of input: HAProxy answers and closes
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class ServerState:
    """One replica as the running HAProxy sees it (`show stat`)."""

    name: str
    status: str  # UP, DOWN, "UP 1/2" while rising, MAINT, no check
    requests: int
    retries: int
    redispatches: int


@dataclass(frozen=True)
class FrontendState:
    name: str
    requests: int
    denied: int
    responses_4xx: int
    responses_5xx: int


class Runtime:
    """The admin and master sockets of one running HAProxy."""

    def __init__(self, admin_socket: Path, master_socket: Path, pid_file: Path) -> None:
        self.admin_socket = admin_socket
        self.master_socket = master_socket
        self.pid_file = pid_file

    def ready(self) -> bool:
        try:
            return "Pid:" in ask(self.admin_socket, "show info", timeout=0.5)
        except OSError:
            return False

    def workers(self) -> list[int]:
        """Current worker pids (not the old ones still draining), from the master CLI."""
        text = ask(self.master_socket, "show proc")
        pids, section = [], ""
        for line in text.splitlines():
            if line.startswith("#"):
                section = line
                continue
            fields = line.split()
            if len(fields) >= 2 and fields[1] == "worker" and "old" not in section:
                pids.append(int(fields[0]))
        return pids

    def master_pid(self) -> int:
        return int(self.pid_file.read_text().split()[0])

    def reload(self, timeout: float = 10.0) -> None:
        """SIGUSR2 to the master; returns once a new worker serves (its pid differs from every previous one)."""
        before = set(self.workers())
        os.kill(self.master_pid(), signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                now = self.workers()
                if now and not before.intersection(now) and self.ready():
                    return
            time.sleep(0.01)
        raise EdgeConfigRejected(
            f"HAProxy did not start a new worker within {timeout:.0f}s of the reload",
            hint="its log says why; the previous worker keeps serving",
        )

    def servers(self, backend: str) -> dict[str, ServerState]:
        out = {}
        for row in self._stat():
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = ServerState(
                    name=row["svname"],
                    status=row["status"],
                    requests=_int(row.get("stot")),
                    retries=_int(row.get("wretr")),
                    redispatches=_int(row.get("wredis")),
                )
        return out

    def frontends(self) -> dict[str, FrontendState]:
        out = {}
        for row in self._stat():
            if row["svname"] == "FRONTEND":
                out[row["pxname"]] = FrontendState(
                    name=row["pxname"],
                    requests=_int(row.get("req_tot")),
                    denied=_int(row.get("dreq")),
                    responses_4xx=_int(row.get("hrsp_4xx")),
                    responses_5xx=_int(row.get("hrsp_5xx")),
                )
        return out

    def _stat(self) -> list[dict[str, str]]:
        text = ask(self.admin_socket, "show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))


def _int(value: str | None) -> int:
    return int(value) if value else 0
