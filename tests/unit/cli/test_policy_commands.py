"""`mesh render | analyze | import` as a user runs them: real processes, exact exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "unit" / "compile" / "fixtures"


def mesh(*args: str, stdin: str | None = None, seed: str = "0", cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed, "COLUMNS": "120"}
    env.pop("MESH_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_render_is_byte_identical_across_processes() -> None:
    a, b = mesh("render", "--env", "dev", seed="1"), mesh("render", "--env", "dev", seed="2")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert "kind: VirtualService" in a.stdout and "kind: Deployment" in a.stdout


def test_render_json_is_a_kubernetes_list() -> None:
    out = mesh("render", "--env", "prod", "-o", "json", "--istio-only")
    doc = json.loads(out.stdout)
    assert doc["kind"] == "List"
    assert {i["kind"] for i in doc["items"]} == {
        "Gateway",
        "VirtualService",
        "DestinationRule",
        "PeerAuthentication",
        "AuthorizationPolicy",
    }


def test_environments_differ_where_they_should() -> None:
    dev, prod = mesh("render", "--env", "dev").stdout, mesh("render", "--env", "prod").stdout
    assert "weight: 50" in dev and "weight: 90" in prod
    assert "x-chaos" in dev and "x-chaos" not in prod


def test_analyze_shipped_policies_exits_zero() -> None:
    out = mesh("analyze", "--env", "dev", "--target", "local")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No validation issues found" in out.stderr


def test_analyze_defects_exit_79_with_json_findings() -> None:
    bad = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n"
        "  http:\n  - route:\n    - {destination: {host: r, subset: a}, weight: 0}\n"
        "    - {destination: {host: r, subset: b}, weight: 0}\n"
    )
    out = mesh("analyze", "-f", "-", "-o", "json", stdin=bad)
    assert out.returncode == 79
    codes = {(f["code"], f["path"]) for f in json.loads(out.stdout)}
    assert ("MSH0002", "spec.http[0].route") in codes
    assert ("IST0101", "spec.http[0].route[0].destination.host") in codes


def test_import_prints_python_that_renders_back(tmp_path: Path) -> None:
    out = mesh("import", "-f", str(FIXTURES / "shop.yaml"))
    assert out.returncode == 0, out.stderr
    pkg = tmp_path / "imported"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(out.stdout)
    again = mesh("render", "--env", "default", "--policies", str(pkg))
    assert again.returncode == 0, again.stderr
    assert "name: shop-gateway" in again.stdout


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["render", "--env", "staging"], 65, "unknown environment 'staging'"),
        (["render", "--policies", "/nonexistent"], 65, "no policies package at /nonexistent"),
        (["import"], 2, "say which file to import"),
        (["import", "-f", "/nonexistent.yaml"], 65, "cannot read /nonexistent.yaml"),
    ],
)
def test_errors_are_clear_and_have_no_traceback(args: list[str], code: int, message: str) -> None:
    out = mesh(*args)
    assert out.returncode == code
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_malformed_policy_names_the_users_file_and_line(tmp_path: Path) -> None:
    pkg = tmp_path / "bad"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from mesh.api import MeshConfig, VirtualService, HTTPRoute, helpers as h\n"
        "def build(env):\n"
        "    return MeshConfig().add(\n"
        "        VirtualService(name='r', hosts=['r'], http=[HTTPRoute(route=[h.to('r')], timeout='soon')]),\n"
        "    )\n"
    )
    out = mesh("render", "--policies", str(pkg))
    assert out.returncode == 65
    assert "bad/__init__.py:4" in out.stderr and "timeout" in out.stderr and "is not a duration" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_command_has_help() -> None:
    for cmd in (
        "render",
        "analyze",
        "import",
        "simulate",
        "up",
        "down",
        "status",
        "apply",
        "proxy-status",
        "proxy-config",
    ):
        out = mesh(cmd, "--help")
        assert out.returncode == 0 and "Example" in out.stdout


def test_simulate_explains_where_a_request_goes() -> None:
    jason = mesh("simulate", "--from", "productpage-v1-0", "-H", "end-user:jason", "http://reviews:9080/reviews")
    assert jason.returncode == 0, jason.stderr
    assert "cluster:      outbound|9080|v2|reviews.default.svc.cluster.local" in jason.stdout
    canary = mesh("simulate", "--from", "productpage-v1-0", "http://reviews:9080/reviews")
    assert "(weight 50)" in canary.stdout and "|v3|" in canary.stdout
    lost = mesh("simulate", "http://nope.local/")
    assert lost.returncode == 1 and "Envoy answers 404" in lost.stdout
