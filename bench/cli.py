"""CLI start-up: `mesh --help` and `mesh status` (no mesh running) as a user runs them (goal <= 150 ms).

Baseline: `python -c pass` with the same interpreter, interleaved in the same run. Wall clock of the whole process
(spawn to exit), the user's clock. The machine is shared, so the ratio is what counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from bench.common import median, row

RUNS = 15


def wall(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - t0


def main() -> None:
    mesh = os.path.join(os.path.dirname(sys.executable), "mesh")
    with tempfile.TemporaryDirectory() as state:  # `status` of a mesh that is not running, never the user's
        env = {**os.environ, "MESH_STATE_DIR": state}
        commands = {"help": [mesh, "--help"], "status": [mesh, "status"], "bare": [sys.executable, "-c", "pass"]}
        wall(commands["help"], env)  # warm the page cache and .pyc files once
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(RUNS):
            for name, argv in commands.items():
                times[name].append(wall(argv, env) * 1000)
    print(f"  {RUNS} interleaved runs each; wall clock from spawn to exit")
    row("mesh --help, median", median(times["help"]), median(times["bare"]), "ms", "goal <= 150 ms")
    row("mesh status (not running), median", median(times["status"]), median(times["bare"]), "ms", "goal <= 150 ms")
