"""Process identity: a pid with its start time names one process for good, and its age is the user's clock."""

from __future__ import annotations

import os
import subprocess
import time

from mesh.dataplane.procs import is_ours, process_age, process_start


def test_a_process_is_named_by_pid_and_start_time_and_gone_once_reaped() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        start = process_start(proc.pid)
        assert start is not None and is_ours(proc.pid, start)
        assert not is_ours(proc.pid, start + 1)  # a reused pid has another start time
    finally:
        proc.kill()
        proc.wait()
    assert process_start(proc.pid) is None and not is_ours(proc.pid, start)


def test_pid_0_and_1_are_never_ours() -> None:
    assert not is_ours(0, 1) and not is_ours(1, process_start(1) or 1) and not is_ours(-1, 1)


def test_age_counts_from_the_exec() -> None:
    t0 = time.monotonic()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        age = process_age(proc.pid)
        assert age is not None and 0.0 <= age <= time.monotonic() - t0 + 0.03  # both clocks tick in 10 ms
        mine = process_age(os.getpid())
        assert mine is not None and mine >= age
    finally:
        proc.kill()
        proc.wait()
    assert process_age(proc.pid) is None
