"""CLI start-up: `mesh --help` and `mesh status` (no mesh running) as a user runs them (goal <= 150 ms).

Baseline: `python -c pass` with the same interpreter, interleaved in the same run. Wall clock of the whole process
(spawn to exit), the user's clock, plus the CPU time it used (user + system: less sensitive to a busy machine than
the wall clock). The machine is shared, so the ratio is what counts.

Bytecode caching is on for the commands (a user's `mesh` writes and reads `__pycache__`): a PYTHONDONTWRITEBYTECODE
inherited from a CI or sandbox shell would recompile every module on every run and time the compiler instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from bench.common import median, row

RUNS = 15


def spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) in milliseconds, spawn to reaped."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = 0  # reaped by wait4: keep Popen from waiting again
    return wall * 1000, (usage.ru_utime + usage.ru_stime) * 1000


def spread(values: list[float]) -> str:
    return f"{median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def main() -> None:
    mesh = os.path.join(os.path.dirname(sys.executable), "mesh")
    with tempfile.TemporaryDirectory() as state:  # `status` of a mesh that is not running, never the user's
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"MESH_STATE_DIR": state}
        commands = {
            "mesh --help": [mesh, "--help"],
            "mesh status": [mesh, "status"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        for argv in commands.values():  # warm the page cache and write the .pyc files once
            spawn(argv, env)
        wall: dict[str, list[float]] = {k: [] for k in commands}
        cpu: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(RUNS):
            for name, argv in commands.items():
                w, c = spawn(argv, env)
                wall[name].append(w)
                cpu[name].append(c)
    print(f"  {RUNS} interleaved runs each; wall clock from spawn to exit, median [min-max] ms; load {_load()}")
    for name in commands:
        print(f"  {name:<16} wall {spread(wall[name]):<16} cpu {spread(cpu[name])}")
    bare = median(wall["python -c pass"])
    row("mesh --help, median", median(wall["mesh --help"]), bare, "ms", "goal <= 150 ms")
    row("mesh status (not running), median", median(wall["mesh status"]), bare, "ms", "goal <= 150 ms")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
