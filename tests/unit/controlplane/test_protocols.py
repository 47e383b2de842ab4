"""Upstream protocol of outbound clusters, as Istio decides it (cluster_traffic_policy.go): h2 for http2/grpc
ports, h2UpgradePolicy per DestinationRule or mesh-wide for HTTP/1.1 ports, useClientProtocol, h2 settings."""

from __future__ import annotations

import pytest
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from mesh.api import ConnectionPoolSettings, HTTPSettings, ServicePort, TrafficPolicy
from mesh.api.networking import ConnectionKeepalive
from mesh.controlplane.translate.clusters import protocol_options, should_h2_upgrade, speaks_h2

HTTP = ServicePort(number=9080, name="http", protocol="http")
GRPC = ServicePort(number=9090, name="grpc-echo", protocol="grpc")


def _policy(**http: object) -> TrafficPolicy:
    return TrafficPolicy(connection_pool=ConnectionPoolSettings(http=HTTPSettings(**http)))


@pytest.mark.parametrize(
    ("rule", "mesh", "port", "upgraded"),
    [
        (None, "DO_NOT_UPGRADE", HTTP, False),
        (None, "UPGRADE", HTTP, True),
        ("DEFAULT", "UPGRADE", HTTP, True),  # DEFAULT defers to the mesh
        ("DO_NOT_UPGRADE", "UPGRADE", HTTP, False),
        ("UPGRADE", "DO_NOT_UPGRADE", HTTP, True),
        (None, "UPGRADE", GRPC, False),  # not an upgrade: gRPC ports speak h2 anyway
    ],
)
def test_h2_upgrade_rule_then_mesh(rule: str | None, mesh: str, port: ServicePort, upgraded: bool) -> None:
    assert should_h2_upgrade(_policy(h2_upgrade_policy=rule), port, mesh) is upgraded


def test_grpc_ports_speak_h2_and_http_ports_http1_by_default() -> None:
    assert speaks_h2(protocol_options(TrafficPolicy(), GRPC, "DO_NOT_UPGRADE"))
    h1 = protocol_options(TrafficPolicy(), HTTP, "DO_NOT_UPGRADE")
    assert not speaks_h2(h1) and h1.explicit_http_config.HasField("http_protocol_options")


def test_use_client_protocol_wins_over_an_upgrade() -> None:
    opts = protocol_options(_policy(use_client_protocol=True, h2_upgrade_policy="UPGRADE"), HTTP, "UPGRADE")
    assert opts.WhichOneof("upstream_protocol_options") == "use_downstream_protocol_config"
    assert opts.use_downstream_protocol_config.HasField("http_protocol_options")
    assert opts.use_downstream_protocol_config.HasField("http2_protocol_options")


def test_h2_settings_shape_every_h2_connection() -> None:
    keepalive = ConnectionKeepalive(interval="30s", timeout="5s")
    opts = protocol_options(
        _policy(h2_upgrade_policy="UPGRADE", max_concurrent_streams=7, http2_keep_alive=keepalive, idle_timeout="1m"),
        HTTP,
        "DO_NOT_UPGRADE",
    )
    h2 = opts.explicit_http_config.http2_protocol_options
    assert h2.max_concurrent_streams.value == 7
    assert h2.connection_keepalive.interval.seconds == 30 and h2.connection_keepalive.timeout.seconds == 5
    assert opts.common_http_protocol_options.idle_timeout.seconds == 60


def test_http1_clusters_ignore_h2_settings() -> None:
    opts = protocol_options(_policy(max_concurrent_streams=7), HTTP, "DO_NOT_UPGRADE")
    assert opts == hpo.HttpProtocolOptions(
        explicit_http_config=hpo.HttpProtocolOptions.ExplicitHttpConfig(http_protocol_options={})
    )
