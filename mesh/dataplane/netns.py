"""Pod networks the way a CNI gives them: one network namespace per pod, a veth into a per-run bridge, an address
from a per-run private subnet, and a hosts file of its own (`ip netns exec` mounts /etc/netns/NAME/hosts).

Everything is named after the run (`msh<run>-<k>`, bridge `mb<run>`) and removed by `destroy()`, so a test run
never touches another mesh or the host's own interfaces. Linux and root only; `available()` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mesh.dataplane.addresses import claim
from mesh.errors import TargetError

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
_CLONE_NEWNET = 0x40000000


def available() -> tuple[bool, str]:
    """Whether pod namespaces can be made here, and why (not)."""
    if not hasattr(os, "geteuid") or os.uname().sysname != "Linux":
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "network namespaces and iptables need root"
    missing = [b for b in ("ip", "iptables-restore", "setpriv") if shutil.which(b) is None]
    if missing:
        return False, f"missing {', '.join(missing)} (Debian packages iproute2, iptables, util-linux)"
    return True, "root with ip, iptables and setpriv"


def run(*argv: str, netns: str | None = None, stdin: str | None = None) -> str:
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise TargetError(f"`{' '.join(cmd)}` failed: {r.stderr.strip()}", hint="pod networking needs root")
    return r.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = []
    for line in run("ip", "-4", "-o", "addr").splitlines() + run("ip", "-4", "route").splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit():
                    out.append(ipaddress.IPv4Network(word, strict=False))
    return out


def free_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A 10.R.0.0/16 no address or route of this host overlaps (per run, so parallel runs never share one)."""
    used = _used_networks()
    for r in (rng or random.Random()).sample(range(64, 250), 60):
        net = ipaddress.IPv4Network(f"10.{r}.0.0/16")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0) and claim(f"subnet-10.{r}"):
            return net
    raise TargetError("no free 10.R.0.0/16 subnet for pods", hint="remove stale bridges (`ip link show type bridge`)")


@dataclass
class PodNetwork:
    """One run's pod network: bridge `gateway` address .0.1, pods 10.R.1.k, service VIPs 10.R.255.k."""

    subnet: ipaddress.IPv4Network
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: dict[str, str] = field(default_factory=dict)  # pod name -> namespace name
    _next_pod: int = 1
    _next_vip: int = 1
    _bridge_up: bool = False
    _record: Path | None = None

    @property
    def bridge(self) -> str:
        return f"mb{self.run_id}"

    @property
    def host_ip(self) -> str:
        """The host's address on the bridge: where pods reach the control plane."""
        return str(self.subnet.network_address + 1)

    @property
    def vip_range(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.subnet.network_address + 255 * 256}/24")

    def next_pod_ip(self) -> str:
        k = self._next_pod
        if k > 254 * 200:
            raise TargetError("pod subnet exhausted", hint="lower the replicas")
        self._next_pod += 1
        return str(self.subnet.network_address + 256 + k)

    def next_vip(self) -> str:
        k = self._next_vip
        self._next_vip += 1
        return str(self.vip_range.network_address + k)

    def create_bridge(self, records: Path | None = None) -> None:
        """The run's bridge; `records` (a directory in the state dir) remembers the run until `destroy`, so a later
        mesh can remove what a killed one left behind (`remove_stale`)."""
        if records is not None:
            self._record = records / f"{self.run_id}.json"
            _write_record(self._record, self.run_id)
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_up = True
        run("ip", "addr", "add", f"{self.host_ip}/{self.subnet.prefixlen}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def add_pod(self, pod: str, ip: str, hosts: Mapping[str, list[str]], resolv: str | None = None) -> str:
        """A namespace for `pod` with `ip` on eth0 (default route via the host), a hosts file of its own and, given
        `resolv`, its own resolv.conf."""
        k = len(self.namespaces) + 1
        ns = f"msh{self.run_id}-{k}"
        host_if = f"mv{self.run_id}-{k}"
        self.namespaces[pod] = ns
        run("ip", "netns", "add", ns)
        etc = ETC_NETNS / ns
        etc.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", f"{ip} {pod}"] + [f"{vip} {' '.join(names)}" for vip, names in hosts.items()]
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        if resolv is not None:
            (etc / "resolv.conf").write_text(resolv)
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", host_if, "master", self.bridge, "up")
        run("ip", "link", "set", "lo", "up", netns=ns)
        run("ip", "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0", netns=ns)
        run("ip", "link", "set", "eth0", "up", netns=ns)
        run("ip", "route", "add", "default", "via", self.host_ip, netns=ns)
        return ns

    def destroy(self) -> None:
        """Remove every namespace, veth and the bridge this run made (a namespace's veth dies with it)."""
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
            shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
        self.namespaces.clear()
        if self._bridge_up:
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
            self._bridge_up = False
        if self._record is not None:
            self._record.unlink(missing_ok=True)
            self._record = None


# --- runs a killed mesh left behind ----------------------------------------------------------------------------


def _start_time(pid: int) -> str:
    """A running process's start time (clock ticks since boot): with the pid it names one process, even after pid
    reuse. "" when it is gone or a zombie (killed, not yet reaped: its network is as orphaned)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    return "" if fields[0] == "Z" else fields[19]


def _write_record(path: Path, run_id: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pid = os.getpid()
    path.write_text(json.dumps({"run": run_id, "pid": pid, "started": _start_time(pid), "uid": os.getuid()}))


def _alive(record: Mapping[str, object]) -> bool:
    pid = record.get("pid")
    return isinstance(pid, int) and _start_time(pid) != "" and _start_time(pid) == record.get("started")


def remove_stale(records: Path) -> list[str]:
    """Remove the namespaces, hosts files and bridge of every run recorded in `records` whose mesh process is gone
    (SIGKILL leaves them): only runs this state dir recorded for this user, never a live one. Returns their ids."""
    removed = []
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        run_id = str(record.get("run", ""))
        if not run_id.isalnum() or record.get("uid") != os.getuid() or _alive(record):
            continue
        names = [p.name for p in NETNS_DIR.glob(f"msh{run_id}-*")] if NETNS_DIR.is_dir() else []
        for ns in names:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        for etc in ETC_NETNS.glob(f"msh{run_id}-*") if ETC_NETNS.is_dir() else []:
            shutil.rmtree(etc, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", f"mb{run_id}"], capture_output=True, check=False)
        path.unlink(missing_ok=True)
        removed.append(run_id)
    return removed


def exec_argv(ns: str, argv: list[str], uid: int | None = None) -> list[str]:
    """`argv` run inside `ns` (with its hosts file), as `uid` if given. The parent-death signal is set again after
    the uid change (Linux clears it when credentials change)."""
    prefix = ["ip", "netns", "exec", ns]
    if uid is not None:
        prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--pdeathsig", "KILL", "--"]
    return prefix + argv


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """This thread inside network namespace `ns` (sockets made here stay in it after we leave)."""
    home = os.open(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / ns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def connect_in(ns: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside `ns`, as its app would make it (so the pod's iptables apply)."""
    with entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        s.close()
        raise
    return s


def tcp_ready_in(ns: str, host: str, port: int) -> bool:
    try:
        connect_in(ns, host, port, 0.2).close()
        return True
    except OSError:
        return False
