"""Importing the library changes nothing in the process: environment variables are set by entry points only."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_control_plane_and_the_local_target_sets_no_environment_variable() -> None:
    code = (
        "import json, os; before = dict(os.environ); "
        "import mesh.controlplane, mesh.controlplane.pilot, mesh.controlplane.xds.server, mesh.targets.local; "
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [], f"import changed the environment: {out}"
