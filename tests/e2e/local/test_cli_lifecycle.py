"""The CLI as a newcomer uses it: up --detach, status, proxy-status, proxy-config, apply, down — and nothing left."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from mesh.dataplane.addresses import allocate_block
from mesh.dataplane.envoy import UnixHTTPConnection
from tests.e2e.local.cli import alive as _alive
from tests.e2e.local.cli import mesh


def test_detached_mesh_lifecycle(tmp_path: Path) -> None:
    host = allocate_block().gateway_ip  # an address nobody else uses: never collides with a user's mesh
    up = mesh(tmp_path, "up", "--detach", "--env", "dev", "--ingress-host", host, "--ingress-port", "8080")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"ingress at http://{host}:8080" in up.stdout
    pids: list[int] = []
    try:
        status = json.loads(mesh(tmp_path, "status", "-o", "json").stdout)
        pids = [p["pid"] for p in status["processes"]] + [status["pid"]]
        assert all(p["running"] for p in status["processes"])

        session = requests.Session()
        session.trust_env = False
        assert (
            session.get(f"http://{host}:8080/productpage", headers={"Host": "bookinfo.local"}, timeout=10).status_code
            == 200
        )

        ps = mesh(tmp_path, "proxy-status")
        assert ps.returncode == 0 and ps.stdout.count("SYNCED") == 8, ps.stdout

        routes = mesh(tmp_path, "proxy-config", "routes", "istio-ingressgateway")
        assert "http.80" in routes.stdout and "bookinfo.local:80" in routes.stdout
        eps = mesh(tmp_path, "proxy-config", "endpoints", "productpage-v1-0")
        assert "outbound|9080|v1|reviews.default.svc.cluster.local" in eps.stdout and "HEALTHY" in eps.stdout

        applied = mesh(tmp_path, "apply", "--env", "prod")
        assert applied.returncode == 0, applied.stderr
        assert "all ACKed" in applied.stdout
        # prod serves another host: the dev host is gone from the gateway
        assert (
            session.get(f"http://{host}:8080/productpage", headers={"Host": "bookinfo.local"}, timeout=10).status_code
            == 404
        )

        dry = mesh(tmp_path, "apply", "--env", "dev", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "~ Gateway default/bookinfo" in dry.stdout and "nothing was pushed" in dry.stdout
        assert "+ VirtualService default/ratings" not in dry.stdout  # both environments have it
        assert (
            session.get(f"http://{host}:8080/productpage", headers={"Host": "bookinfo.local"}, timeout=10).status_code
            == 404
        )

        # -f merges like `kubectl apply -f`: only the file's objects change
        vs = tmp_path / "reviews-v2.yaml"
        vs.write_text(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n"
            "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n"
        )
        merged = mesh(tmp_path, "apply", "-f", str(vs))
        assert merged.returncode == 0, merged.stderr
        assert "~ VirtualService default/reviews" in merged.stdout
        assert "Gateway" not in merged.stdout and "DestinationRule" not in merged.stdout

        logs = mesh(tmp_path, "logs", "productpage-v1-0")
        assert (
            logs.returncode == 0
            and "==> app/productpage-v1-0" in logs.stdout
            and "==> envoy/productpage-v1-0" in logs.stdout
        )
        assert "listening on" in logs.stdout  # the app's own start line

        # the control API refuses callers without the state file's token
        api = status["api"] if "api" in status else json.loads((tmp_path / "state.json").read_text())["api"]
        unauthenticated = UnixHTTPConnection(api.removeprefix("unix:"), 5)  # the control API's owner-only socket
        unauthenticated.request("GET", "/status")
        assert unauthenticated.getresponse().status == 401
        unauthenticated.close()
        assert oct((tmp_path / "state.json").stat().st_mode & 0o777) == "0o600"

        again = mesh(tmp_path, "up", "--detach", "--ingress-host", host)
        assert again.returncode == 69 and "already running" in again.stderr
    finally:
        down = mesh(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if _alive(p)], "processes survived `mesh down`"
    assert mesh(tmp_path, "status").returncode == 69
    # nothing running: `down` is a no-op success that says so; the detached log never asked for Ctrl-C
    again_down = mesh(tmp_path, "down")
    assert again_down.returncode == 0 and "nothing to stop" in again_down.stdout
    assert "Ctrl-C" not in (tmp_path / "mesh.log").read_text()
