"""The telemetry config Envoy is given is config Envoy accepts (`envoy --mode validate`, the real binary)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from mesh.dataplane import envoy
from mesh.observability.envoyconfig import TELEMETRY_CLUSTER, TelemetryOptions, add_to_bootstrap, instrument
from mesh.runtime import Proxy

OPTIONS = TelemetryOptions(collector_host="127.0.0.1", collector_port=4317, sampling=1.0)


def test_instrument_copies_and_adds_als_and_tracer_per_reporter() -> None:
    base = hcm.HttpConnectionManager(stat_prefix="x")
    out = instrument(base, OPTIONS, "destination", "reviews.default")
    assert not base.access_log and not base.HasField("tracing")  # shared input untouched
    assert out.access_log[0].name == "envoy.access_loggers.http_grpc"
    assert out.tracing.random_sampling.value == 1.0
    assert instrument(base, None, "source", "x") is base
    assert instrument(base, TelemetryOptions(metrics=False, tracing=False), "source", "x") is base


def test_envoy_accepts_the_bootstrap_with_the_collector_cluster_and_an_instrumented_listener(tmp_path: Path) -> None:
    proxy = Proxy("sidecar", "127.0.0.1", "reviews-v1-0", "default", {"app": "reviews"}, "reviews")
    config = add_to_bootstrap(envoy.bootstrap(proxy, "127.0.0.1", 15010, admin_port=15999), OPTIONS, proxy.ip)
    assert [c["name"] for c in config["static_resources"]["clusters"]] == ["xds-grpc", TELEMETRY_CLUSTER]
    m = instrument(hcm.HttpConnectionManager(stat_prefix="in", route_config={"name": "r"}), OPTIONS, "source", "a.b")
    m.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
    hcm_json = json_format.MessageToDict(m)
    hcm_json["@type"] = "type.googleapis.com/" + m.DESCRIPTOR.full_name
    config["static_resources"]["listeners"] = [
        {
            "name": "l",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm_json}]}
            ],
        }
    ]
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(config))
    r = subprocess.run(
        [envoy.envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_proxy_outside_the_pods_binds_no_source_address() -> None:
    """Under transparent capture a gateway on loopback reaches pods over the bridge: a loopback source cannot go
    there, so it binds nothing (sidecars keep binding their pod address)."""
    proxy = Proxy("sidecar", "10.1.1.2", "reviews-v1-0", "default", {"app": "reviews"}, "reviews")
    base = envoy.bootstrap(proxy, "127.0.0.1", 15010, admin_port=15999)
    bound = add_to_bootstrap(base, OPTIONS, proxy.ip)
    assert bound["cluster_manager"]["upstream_bind_config"]["source_address"]["address"] == "10.1.1.2"
    unbound = add_to_bootstrap(base, OPTIONS, None)
    assert "upstream_bind_config" not in unbound.get("cluster_manager", {})
    assert [c["name"] for c in unbound["static_resources"]["clusters"]] == ["xds-grpc", TELEMETRY_CLUSTER]
