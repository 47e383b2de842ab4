"""Where the suite's time goes: wall and CPU per module, so waiting (wall >> CPU) can be told from working.

    .venv/bin/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder -p tests.suite_profile tests

CPU is the test process's and every live descendant's (Envoys, apps, HAProxy, Prometheus), read from /proc at each
test's start and end, plus what exited children left in their parent's counters. A mesh started by a session
fixture is charged to the first test that uses it. Each xdist worker appends its tests to a file of its own; the
controller prints the table after the run, with the load average, since the machine may be shared.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path

import pytest

_DIR_ENV = "MESHOPS_SUITE_PROFILE_DIR"
_TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and its reaped children)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK)  # utime stime cutime cstime
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by `root` and its live descendants (each counting its reaped children)."""
    procs = _processes()
    children: defaultdict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in procs.items():
        children[ppid].append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs.get(pid, (0, 0.0))[1]
        todo.extend(children[pid])
    return total


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) picks the directory
        os.environ[_DIR_ENV] = tempfile.mkdtemp(prefix="meshops-suite-profile-")  # a channel to the workers only


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    wall, cpu = time.monotonic(), tree_cpu(os.getpid())
    yield
    row = {"id": item.nodeid, "wall": time.monotonic() - wall, "cpu": tree_cpu(os.getpid()) - cpu}
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(Path(os.environ[_DIR_ENV]) / f"{worker}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or _DIR_ENV not in os.environ:
        return
    directory = Path(os.environ[_DIR_ENV])
    rows = [json.loads(line) for f in directory.glob("*.jsonl") for line in f.read_text().splitlines()]
    shutil.rmtree(directory, ignore_errors=True)
    modules: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        m = modules[r["id"].split("::", 1)[0]]
        m[0] += 1
        m[1] += r["wall"]
        m[2] += r["cpu"]
    write = terminalreporter.write_line
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    terminalreporter.section("time per module (suite_profile)")
    write(
        f"{len(rows)} tests; wall summed over workers {sum(r['wall'] for r in rows):.0f} s, CPU {sum(r['cpu'] for r in rows):.0f} s; load average now {load}"
    )
    write(f"{'module':72} {'tests':>5} {'wall s':>7} {'CPU s':>7} {'waiting':>7}")
    for name, (n, wall, cpu) in sorted(modules.items(), key=lambda kv: -kv[1][1])[:25]:
        write(f"{name:72} {n:5.0f} {wall:7.1f} {cpu:7.1f} {max(0.0, wall - cpu):7.1f}")
