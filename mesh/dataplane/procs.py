"""Process identity (a pid and its start time), with the standard library only: `mesh status` reads it before
anything heavy is loaded."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), or None if there is no such
    live process. With the pid it names one process for good: a reused pid has another start time."""
    if pid <= 1:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces and parentheses
    if fields[0] in ("Z", "X"):  # a killed process nobody reaped yet (a zombie) runs nothing: it is gone
        return None
    return int(fields[19])


def is_ours(pid: int, start: int) -> bool:
    """`pid` is still the process that started at `start` and runs as this user (never pid 0/1/-1, never an
    unrelated process that reused the pid)."""
    if pid <= 1 or not start or process_start(pid) != start:
        return False
    try:
        return Path(f"/proc/{pid}").stat().st_uid == os.getuid()
    except OSError:
        return False


def process_age(pid: int) -> float | None:
    """Seconds since the process started (the user's clock for a command: from its exec, imports included), to the
    kernel's tick (10 ms); None if there is no such process."""
    start = process_start(pid)
    if start is None:
        return None
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start / os.sysconf("SC_CLK_TCK"))
