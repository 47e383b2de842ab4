"""A mesh killed with SIGKILL cannot remove its pod network: the next `mesh up` or `mesh down` of the same state dir
removes it, and leaves alone a run whose mesh still lives and a run recorded for another user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh.dataplane import netns
from mesh.dataplane.addresses import allocate_block
from mesh.targets.local.interception import RECORDS, remove_stale_networks
from tests.e2e.local.cli import alive, mesh

pytestmark = pytest.mark.e2e


def _exists(ns: str) -> bool:
    return (netns.NETNS_DIR / ns).exists()


def _bridge(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def _killed_mesh(state_dir: Path) -> netns.PodNetwork:
    """A pod network whose record names a mesh process that was SIGKILLed (a child that is gone now)."""
    net = netns.PodNetwork(netns.free_subnet())
    net.create_bridge(state_dir / RECORDS)
    net.add_pod("pod-a", net.next_pod_ip(), {}, "nameserver 127.0.0.1\n")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    child.wait()
    record = state_dir / RECORDS / f"{net.run_id}.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "pid": child.pid, "started": "1"}))
    return net


def test_the_next_mesh_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    ok, why = netns.available()
    if not ok:
        pytest.fail(f"needs network namespaces: {why} (run as root; apt-get install iproute2 iptables)")
    dead = _killed_mesh(tmp_path)
    live = netns.PodNetwork(netns.free_subnet())
    live.create_bridge(tmp_path / RECORDS)  # recorded by this process, which lives
    live.add_pod("pod-b", live.next_pod_ip(), {})
    other = netns.PodNetwork(netns.free_subnet())
    other.create_bridge(tmp_path / RECORDS)
    other_record = tmp_path / RECORDS / f"{other.run_id}.json"
    other_record.write_text(json.dumps({**json.loads(other_record.read_text()), "pid": 1 << 22, "uid": 4242}))
    try:
        dead_ns = dead.namespaces["pod-a"]
        assert _exists(dead_ns) and _bridge(dead.bridge)
        assert remove_stale_networks(tmp_path) == [dead.run_id]
        assert not _exists(dead_ns) and not _bridge(dead.bridge)
        assert not (netns.ETC_NETNS / dead_ns).exists()
        assert not (tmp_path / RECORDS / f"{dead.run_id}.json").exists()
        assert _exists(live.namespaces["pod-b"]) and _bridge(live.bridge)  # a live mesh's network stays
        assert _bridge(other.bridge) and other_record.exists()  # another user's record is not ours to act on
        assert remove_stale_networks(tmp_path) == []
    finally:
        for net in (dead, live, other):
            net.destroy()


def test_mesh_down_after_sigkill_removes_the_pod_network(tmp_path: Path) -> None:
    """The real thing, from the command line: a detached iptables mesh with DNS proxying is SIGKILLed (nothing of
    it runs its cleanup), then `mesh down` removes its namespaces, hosts files and bridge."""
    ok, why = netns.available()
    if not ok:
        pytest.fail(f"needs network namespaces: {why} (run as root; apt-get install iproute2 iptables)")
    host = allocate_block().gateway_ip
    up = mesh(
        tmp_path,
        "up",
        "--detach",
        "--env",
        "dev",
        "--ingress-host",
        host,
        "--interception",
        "iptables",
        "--dns-proxy",
        "--outbound-traffic-policy",
        "REGISTRY_ONLY",
    )
    assert up.returncode == 0, up.stdout + up.stderr
    status = json.loads(mesh(tmp_path, "status", "-o", "json").stdout)
    namespaces = [p["netns"] for p in status["pods"]]
    run_id = namespaces[0].removeprefix("msh").split("-")[0]
    assert all(_exists(ns) for ns in namespaces) and _bridge(f"mb{run_id}")
    pids = [p["pid"] for p in status["processes"]]
    os.kill(status["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15  # its children go with it (parent-death signal)
    while any(alive(p) for p in [status["pid"], *pids]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    assert all(_exists(ns) for ns in namespaces) and _bridge(f"mb{run_id}")  # SIGKILL left them
    down = mesh(tmp_path, "down")
    assert down.returncode == 0 and f"removed the pod network of 1 killed mesh(es): mb{run_id}" in down.stdout, down
    assert not any(_exists(ns) for ns in namespaces) and not _bridge(f"mb{run_id}")
    assert not any((netns.ETC_NETNS / ns).exists() for ns in namespaces)
