"""The state file is never trusted blindly: damage is explained and recoverable, and no pid is signalled unless it
provably is the mesh process that wrote the file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.dataplane.procs import process_start
from mesh.errors import EXIT_TARGET, MeshNotRunning, StateCorrupt
from mesh.targets.local.api import StateFile
from mesh.targets.local.control import is_our_mesh, read_state, state_path, write_state
from mesh.targets.local.options import LocalOptions
from mesh.targets.local.target import LocalTarget


def _state(pid: int, pid_start: int) -> StateFile:
    return StateFile(
        pid=pid,
        pid_start=pid_start,
        ingress="http://127.0.0.1:1",
        ca="ca.crt",
        revision=1,
        started_at=0.0,
        api="http://127.0.0.1:1",
        token="t",
    )


def mesh(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "mesh", *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process of ours: what a reused pid would name."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


DAMAGED = {
    "truncated": b'{"pid": 12, "ingress": "http://1',
    "empty": b"",
    "binary": b"\xff\xfe\x00\x81garbage",
    "wrong types": b'{"pid": "twelve", "ingress": 3}',
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_state_file_is_explained_and_down_force_recovers(tmp_path: Path, content: bytes) -> None:
    state_path(tmp_path).write_bytes(content)
    with pytest.raises(StateCorrupt, match="damaged") as err:
        read_state(tmp_path)
    assert "--force" in str(err.value) and err.value.exit_code == EXIT_TARGET
    status = mesh(tmp_path, "status")
    assert status.returncode == EXIT_TARGET and "Traceback" not in status.stderr and "--force" in status.stderr
    down = mesh(tmp_path, "down", "--force")
    assert down.returncode == 0, down.stderr
    assert not state_path(tmp_path).exists()


@pytest.mark.parametrize("pid", [0, -1, 1])
def test_pids_that_name_no_single_mesh_are_never_signalled(tmp_path: Path, pid: int) -> None:
    write_state(tmp_path, _state(pid, 1))
    assert not is_our_mesh(_state(pid, 1))
    LocalTarget(LocalOptions(state_dir=tmp_path)).down()  # returns, signalling nothing (we are still here)
    assert not state_path(tmp_path).exists()  # recognized as stale and removed


def test_a_reused_pid_is_not_taken_for_the_mesh(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    start = process_start(bystander.pid)
    assert start is not None
    write_state(tmp_path, _state(bystander.pid, start - 1))  # the pid, but another process's start time
    with pytest.raises(MeshNotRunning, match="no longer running"):
        read_state(tmp_path)
    write_state(tmp_path, _state(bystander.pid, start - 1))
    LocalTarget(LocalOptions(state_dir=tmp_path)).down()
    down = mesh(tmp_path, "down", "--force")
    assert down.returncode == 0 and "none was signalled" in down.stdout
    assert bystander.poll() is None  # never signalled


def test_down_with_nothing_running_succeeds_and_says_so(tmp_path: Path) -> None:
    down = mesh(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert "nothing to stop" in down.stdout
