"""A mesh killed with SIGKILL cannot remove its pod network: the next `mesh up` or `mesh down` of the same state dir
removes it, and leaves alone a run whose mesh still lives and a run recorded for another user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.dataplane import netns
from mesh.targets.local.interception import RECORDS, remove_stale_networks

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
