"""`mesh up` serves its first request without loading what only some meshes use: ACME (acme, OpenSSL, josepy),
the telemetry stack and the HTTP client library (`requests`), Pulumi and Kubernetes. Each is imported where it is
used (`--observability`, an Issuer, traffic clients). A structural check, not a timing: `bench coldstart`
times the start."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_ON_THE_START_PATH = (
    "acme",
    "OpenSSL",
    "josepy",
    "requests",
    "urllib3",
    "pulumi",
    "kubernetes",
    "mesh.controlplane.ca.acme",
    "mesh.controlplane.ca.acme_renewal",
    "mesh.observability.stack",
    "mesh.observability.prometheus",
)

# what `mesh up` imports on its way to a started mesh: the options, the policies, the local target and its mesh
PROBE = """
import json, sys
from mesh.cli.meshcmds import _observability, _target
from mesh.compile import build_policies
from mesh.targets.local.mesh import LocalMesh
_observability(False, 100.0)
target = _target("local", "dev", __import__("pathlib").Path("unused"), "policies")
build_policies("dev", "policies")
sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def test_mesh_up_start_path_skips_optional_features() -> None:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stderr.strip().splitlines()[-1]))
    found = sorted(m for m in loaded if any(m == x or m.startswith(x + ".") for x in NOT_ON_THE_START_PATH))
    assert found == [], f"`mesh up` would import {found} before serving: import them where the feature starts"
    assert "mesh.targets.local.mesh" in loaded and "mesh.api" in loaded  # the probe did reach the start path
