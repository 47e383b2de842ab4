"""The test suite as a developer waits for it (issue 15, goal 5).

1. `make test` (lint, then the whole suite on pytest-xdist with mypy beside it), from the command's start to its
   exit, with the CPU of every process it ran and reaped (Envoys, apps, HAProxy, Prometheus, Chromium included).
   Baseline: that CPU spread perfectly over this machine's cores, the least wall time the same work could take
   here; the ratio says how well the run kept the cores busy. Goal: <= 3 min.
2. The target-agnostic e2e suite (`tests/e2e/test_*.py`, the one that runs on both targets), the same way. Goal:
   <= 45 s.

Run it from a warm tree (a `make install`ed venv; the second run also has the module-order cache of the first).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import row

REPO = Path(__file__).resolve().parent.parent
E2E = [".venv/bin/python", "-m", "pytest", "-n", "2", "--dist", "loadscope", "-q", "-p", "no:cacheprovider"]


@dataclass(frozen=True)
class Timed:
    wall: float
    cpu: float
    passed: int
    output: str


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str]) -> Timed:
    """Run a command to its end; wall and the CPU of everything it reaped. Exits when the command failed: a red
    suite has no time worth reporting."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:])
        raise SystemExit(f"`{' '.join(argv)}` failed (exit {proc.returncode}); fix the suite before timing it")
    found = re.findall(r"(\d+) passed", proc.stdout)
    return Timed(wall, cpu, int(found[-1]) if found else 0, proc.stdout)


def slowest(output: str, n: int = 10) -> list[str]:
    """pytest's `--durations` lines, as printed."""
    return re.findall(r"^\s*\d+\.\d+s (?:call|setup|teardown) .+$", output, re.MULTILINE)[:n]


def report(name: str, t: Timed, goal_s: float) -> None:
    cores = os.cpu_count() or 1
    floor = t.cpu / cores
    print(f"  {name}: {t.passed} passed; wall {t.wall:.1f} s, CPU {t.cpu:.1f} s over {cores} cores")
    row(f"{name}, wall", t.wall, floor, "s", goal=f"goal <= {goal_s:.0f} s")


def main() -> None:
    print(f"  load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    suite = timed(["make", "test"])
    report("make test", suite, 180)
    for line in slowest(suite.output):
        print(f"    {line.strip()}")
    e2e = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests" / "e2e").glob("test_*.py"))
    report("target-agnostic e2e suite", timed([*E2E, *e2e]), 45)
    print(f"  load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("  baseline: the same CPU spread over every core (the least wall time the work could take here)")
