"""When the mesh process dies, everything it started dies with it, and `mesh up` starts again in place; the
foreground `mesh up` serves until Ctrl-C and then stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mesh.dataplane.addresses import allocate_block
from tests.e2e.local.cli import ROOT, mesh
from tests.e2e.local.cli import alive as _alive


def descendants(pid: int) -> list[int]:
    """Every process below `pid` now (the sample-app zygote and the workloads it forked are grandchildren)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat:
            parent[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    out, frontier = [], [pid]
    while frontier:
        frontier = [c for c, p in parent.items() if p in frontier]
        out += frontier
    return out


def _all_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_a_killed_mesh_takes_everything_with_it_and_up_starts_cleanly_in_place(tmp_path: Path) -> None:
    """Item 19."""
    host = allocate_block().gateway_ip
    args = ("up", "--detach", "--ingress-host", host, "--ingress-port", "8080", "--ingress-https-port", "8443")
    first = mesh(tmp_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    status = json.loads(mesh(tmp_path, "status", "-o", "json").stdout)
    pids = [p["pid"] for p in status["processes"]]
    below = descendants(status["pid"])
    assert set(pids) <= set(below) and len(below) > len(pids)  # the zygote too, and nothing listed is unrelated
    os.kill(status["pid"], signal.SIGKILL)  # the supervisor itself dies
    try:
        assert _all_gone([status["pid"], *below], timeout=20) == []
        dead = mesh(tmp_path, "status")
        assert dead.returncode == 69 and "no longer running" in dead.stderr
        second = mesh(tmp_path, *args)
        assert second.returncode == 0, second.stdout + second.stderr
        again = json.loads(mesh(tmp_path, "status", "-o", "json").stdout)
        assert again["pid"] != status["pid"] and all(p["running"] for p in again["processes"])
    finally:
        down = mesh(tmp_path, "down")
    assert down.returncode == 0, down.stderr


def test_the_foreground_mesh_serves_until_ctrl_c(tmp_path: Path) -> None:
    host = allocate_block().gateway_ip
    env = {**os.environ, "MESH_STATE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh", "up", "--ingress-host", host, "--ingress-port", "8080"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    seen = []
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            seen.append(line)
            if "Press Ctrl-C" in line or time.monotonic() > deadline:
                break
        assert any("Press Ctrl-C" in s for s in seen), "".join(seen)
        assert proc.poll() is None  # still serving
        status = mesh(tmp_path, "status")
        assert status.returncode == 0, status.stderr
        below = descendants(proc.pid)
        assert len(below) >= 16  # 7 apps, 8 Envoys, the zygote
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped; no process left behind" in rest, rest
        assert _all_gone(below, timeout=5) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
