"""`mesh --help` stays instant: the command line loads no heavy library until a command needs it.

A structural check (which modules a fresh interpreter has imported), not a timing: `make bench` times it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from mesh.cli import reconcile
from mesh.gitops.daemon import DEFAULT_POLL

HEAVY = (
    "grpc",
    "pydantic",
    "cryptography",
    "pulumi",
    "git",
    "kubernetes",
    "requests",
    "yaml",
    "google.protobuf",
    "mesh.api",
    "mesh.analyze",
    "mesh.compile",
    "mesh.controlplane.ca",  # the package itself is light: its prepare_process() runs at every entry point
    "mesh.controlplane.pilot",
    "mesh.controlplane.translate",
    "mesh.controlplane.xds",
    "mesh.gitops",
    "mesh.targets",
)

# Exactly what the `mesh` entry point does for `mesh --help` (every command module registers), then the modules loaded.
PROBE = """
import json, sys
from mesh.cli import main
sys.argv = ["mesh", "--help"]
try:
    main()
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def _loaded_after(code: str) -> set[str]:
    with tempfile.TemporaryDirectory() as cache:  # an empty help cache: click renders, every command registers
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert "Usage: mesh" in r.stdout, r.stderr
    return set(json.loads(r.stderr))


def test_every_command_registers_without_heavy_imports() -> None:
    loaded = _loaded_after(PROBE)
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"`mesh --help` would import {heavy}: import them inside the command that needs them"


def test_help_lists_every_command_and_exits_zero() -> None:
    r = subprocess.run([sys.executable, "-m", "mesh", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for command in ("render", "analyze", "import", "simulate", "up", "status", "apply", "reconcile", "diff"):
        assert f"  {command}" in r.stdout


def test_reconcile_poll_default_is_the_daemons() -> None:
    assert reconcile.DEFAULT_POLL == DEFAULT_POLL
