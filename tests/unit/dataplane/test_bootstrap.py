"""The sidecar bootstrap keeps xDS and admin off the network: owner-only sockets, a credential, a read-only port."""

from __future__ import annotations

import stat
from pathlib import Path

from mesh.dataplane import envoy
from mesh.runtime import Pod, Proxy, sidecar_for


def _proxy() -> Proxy:
    pod = Pod("reviews-v1-0", "default", "reviews", "v1", {"app": "reviews"}, "127.9.0.2", "127.9.0.3", "reviews", ())
    return sidecar_for(pod)


def test_admin_and_xds_are_on_owner_only_sockets_with_the_credential(tmp_path: Path) -> None:
    config = envoy.bootstrap(
        _proxy(), "", 0, xds_socket=tmp_path / "xds.sock", admin_socket=tmp_path / "a.sock", node_metadata={"K": "t"}
    )
    assert config["admin"]["address"] == {"pipe": {"path": str(tmp_path / "a.sock"), "mode": 0o600}}
    xds = config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert xds["endpoint"]["address"] == {"pipe": {"path": str(tmp_path / "xds.sock"), "mode": 0o600}}
    assert config["node"]["metadata"]["K"] == "t"
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.9.0.2", "port_value": 15000}
    routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    allowed = [
        h["string_match"]["exact"]
        for r in routes
        if "route" in r
        for h in r["match"]["headers"]
        if h["name"] == ":path"
    ]
    assert allowed == list(envoy.READ_ONLY_ADMIN_PATHS)
    assert routes[-1]["direct_response"]["status"] == 403


def test_bootstrap_files_are_owner_only(tmp_path: Path) -> None:
    path = envoy.write_bootstrap(tmp_path / "b.json", {"node": {"id": "x"}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_inbound_cluster_of_an_app_on_a_socket_points_at_the_socket() -> None:
    from dataclasses import replace

    from mesh.api.workloads import ServicePort
    from mesh.controlplane.translate.clusters import inbound_clusters

    pod = Pod("r-0", "default", "r", "v1", {"app": "r"}, "127.9.0.2", "127.9.0.3", "r", (ServicePort(number=9080),))
    (tcp,) = inbound_clusters(sidecar_for(pod))
    assert tcp.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "127.9.0.3"
    (unix,) = inbound_clusters(sidecar_for(replace(pod, app_socket="/run/x/app.sock")))
    assert unix.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path == "/run/x/app.sock"


def test_the_stats_flush_interval_is_envoys_default_unless_asked() -> None:
    assert envoy.bootstrap(_proxy(), "127.0.0.1", 1)["stats_flush_interval"] == "5s"
    assert envoy.bootstrap(_proxy(), "127.0.0.1", 1, stats_flush_interval=0.5)["stats_flush_interval"] == "0.5s"
