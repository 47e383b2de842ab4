"""Running `mesh` as a newcomer does, from a subprocess, against one state directory (shared by the CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def mesh(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_STATE_DIR": str(state), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def alive(pid: int) -> bool:
    """A process that runs (a zombie nobody reaped yet does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
