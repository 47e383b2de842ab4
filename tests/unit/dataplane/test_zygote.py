"""The sample app's zygote: each forked workload is a process of its own that behaves as `python -m mesh.sampleapp`
would (identity from its own environment, a fresh interpreter's signal dispositions), is reaped and reported, dies
with the zygote, and leaves nothing behind; the supervisor falls back to starting the app itself without it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.dataplane import zygote as zygote_module
from mesh.dataplane.supervisor import ProcessSpec, Supervisor
from mesh.dataplane.zygote import Forked, Zygote, forkable

APP = [sys.executable, "-m", "mesh.sampleapp"]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout}s")


def get(sock_path: Path) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


def serves(sock_path: Path) -> bool:
    try:
        return bool(get(sock_path))
    except OSError:
        return False


def workload_env(sock: Path, name: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "SERVICE_NAME": "details",
        "SERVICE_VERSION": name,
        "POD_NAME": f"details-{name}-0",
        "UNIX_SOCKET": str(sock),
    }


def signal_masks(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in lines if line.startswith(("SigIgn", "SigCgt")))}


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(tmp_path / "zygote.log").start()
    try:
        yield z
    finally:
        z.stop()
        assert not z.alive


def test_forkable_names_only_this_interpreters_sample_app() -> None:
    assert forkable([*APP, "--tcp-echo", "9000"]) == ["--tcp-echo", "9000"]
    assert forkable(["/usr/bin/python3", "-m", "mesh.sampleapp"]) is None
    assert forkable([sys.executable, "-m", "mesh.sampleapp.grpc_server"]) is None


def test_each_workload_is_its_own_process_with_its_own_identity(zygote: Zygote, tmp_path: Path) -> None:
    children = {}
    for name in ("v1", "v2"):
        sock = tmp_path / f"{name}.sock"
        child = zygote.spawn(APP, workload_env(sock, name), tmp_path / f"{name}.log")
        assert isinstance(child, Forked)
        until(sock.exists)
        children[name] = (child, sock)
    (one, sock1), (two, sock2) = children["v1"], children["v2"]
    assert one.pid != two.pid and zygote.proc is not None
    for child in (one, two):
        assert os.getsid(child.pid) == child.pid  # a session (and process group) of its own
        stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) == zygote.proc.pid
    assert get(sock1)["version"] == "v1" and get(sock2)["version"] == "v2"
    assert get(sock2)["pod"] == "details-v2-0"
    assert "details v2 (details-v2-0) listening on" in (tmp_path / "v2.log").read_text()


def test_a_forked_app_has_a_fresh_interpreters_signal_dispositions(zygote: Zygote, tmp_path: Path) -> None:
    """SIGPIPE ignored (a peer that hung up mid-write is an exception, not the end of the app), SIGINT caught: the
    zygote's own dispositions (SIGCHLD caught, SIGINT ignored) must not leak into a workload."""
    sock = tmp_path / "f.sock"
    child = zygote.spawn(APP, workload_env(sock, "v1"), tmp_path / "f.log")
    assert child is not None
    plain_sock = tmp_path / "p.sock"
    plain = subprocess.Popen(APP, env={**os.environ, **workload_env(plain_sock, "v1")}, stderr=subprocess.DEVNULL)
    try:
        until(lambda: sock.exists() and plain_sock.exists())
        assert signal_masks(child.pid) == signal_masks(plain.pid)
        assert signal_masks(child.pid)["SigIgn"] & (1 << (signal.SIGPIPE - 1))
    finally:
        plain.terminate()
        plain.wait()


def test_exit_is_reported_with_popens_returncode(zygote: Zygote, tmp_path: Path) -> None:
    sock = tmp_path / "k.sock"
    child = zygote.spawn(APP, workload_env(sock, "v1"), tmp_path / "k.log")
    assert child is not None
    until(sock.exists)
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.05)
    child.kill()
    assert child.wait(10) == -signal.SIGKILL and child.poll() == -signal.SIGKILL
    assert not alive(child.pid)
    bad = zygote.spawn([*APP, "--no-such-option"], workload_env(tmp_path / "b.sock", "v1"), tmp_path / "b.log")
    assert bad is not None and bad.wait(10) == 2  # argparse's usage error, as the command line would exit
    assert "unrecognized arguments" in (tmp_path / "b.log").read_text()


def test_children_die_with_the_zygote_and_spawning_falls_back(tmp_path: Path) -> None:
    z = Zygote(tmp_path / "zygote.log").start()
    try:
        sock = tmp_path / "d.sock"
        child = z.spawn(APP, workload_env(sock, "v1"), tmp_path / "d.log")
        assert child is not None and z.proc is not None
        until(sock.exists)
        os.kill(z.proc.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        assert not alive(child.pid)  # its parent-death signal, not only our bookkeeping
        assert z.spawn(APP, workload_env(sock, "v1"), tmp_path / "d.log") is None
    finally:
        z.stop()


def test_supervisor_forks_restarts_and_stops_through_the_zygote(zygote: Zygote, tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    env = workload_env(sock, "v1")
    spec = ProcessSpec(
        name="app/details-v1-0",
        argv=APP,
        env=env,
        log_path=tmp_path / "s.log",
        ready=lambda: serves(sock),
        fork=lambda e: zygote.spawn(APP, e, tmp_path / "s.log"),
    )
    sup = Supervisor(on_event=lambda m: None, backoff=0.05)
    sup.start([spec], timeout=20)
    try:
        first = sup.pids()
        assert zygote.proc is not None and f"PPid:\t{zygote.proc.pid}" in Path(f"/proc/{first[0]}/status").read_text()
        sup.kill("app/details-v1-0")
        until(lambda: sup.status()[0].restarts == 1 and sup.pids() and sup.pids() != first)
        assert sup.wait_ready("app/details-v1-0", lambda: serves(sock), timeout=10)
        again = sup.pids()
        assert f"PPid:\t{zygote.proc.pid}" in Path(f"/proc/{again[0]}/status").read_text()  # forked again
    finally:
        sup.stop()
    assert not any(alive(p) for p in first + again)


def test_supervisor_starts_the_app_itself_when_the_zygote_cannot(tmp_path: Path) -> None:
    sock = tmp_path / "n.sock"
    spec = ProcessSpec(
        name="app/n",
        argv=APP,
        env=workload_env(sock, "v1"),
        log_path=tmp_path / "n.log",
        ready=sock.exists,
        fork=lambda e: None,
    )
    sup = Supervisor(on_event=lambda m: None)
    sup.start([spec], timeout=20)
    try:
        pid = sup.pids()[0]
        assert f"PPid:\t{os.getpid()}" in Path(f"/proc/{pid}/status").read_text()
    finally:
        sup.stop()
    assert not alive(pid)


def test_a_prestarted_zygote_is_adopted_once_and_discarded_otherwise(tmp_path: Path) -> None:
    log = tmp_path / "state" / "zygote.log"
    zygote_module.prestart(log)
    first = zygote_module.adopt(log)
    try:
        assert first.alive and first.proc is not None
        assert oct(log.stat().st_mode & 0o777) == "0o600" and oct(log.parent.stat().st_mode & 0o777) == "0o700"
        second = zygote_module.adopt(log)  # nothing prestarted any more: a new one
        try:
            assert second.proc is not None and second.proc.pid != first.proc.pid
        finally:
            second.stop()
    finally:
        first.stop()
    zygote_module.prestart(log)
    elsewhere = zygote_module.adopt(tmp_path / "other.log")  # prestarted for another mesh: stopped, not reused
    try:
        assert elsewhere.log_path == tmp_path / "other.log"
    finally:
        elsewhere.stop()
    zygote_module.prestart(log)
    left = zygote_module._prestarted
    zygote_module.discard()
    assert left is not None and not left.alive and zygote_module._prestarted is None


def test_mesh_up_with_a_bad_ttl_is_a_usage_error_and_leaves_no_zygote(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mesh", "up", "--state-dir", str(tmp_path), "--workload-cert-ttl", "soon"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--workload-cert-ttl" in r.stderr, r.stderr
    assert not [p for p in _children_of_pid_alive(tmp_path)], "a zygote outlived the failed `mesh up`"


def _children_of_pid_alive(state: Path) -> list[int]:
    """Live processes whose command line names this state dir's zygote log (none may outlive `mesh up`)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            ours = entry.name.isdigit() and b"mesh.sampleapp.zygote" in (entry / "cmdline").read_bytes()
            if ours and str(state) in os.readlink(entry / "fd" / "2") and alive(int(entry.name)):
                out.append(int(entry.name))
        except OSError:
            continue
    return out
