"""Translation gives each HTTP connection manager the reporter its end of the request is, and nothing when off."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from mesh.compile import build_policies
from mesh.controlplane.translate.context import MeshOptions, PushContext
from mesh.controlplane.xds import resources as rt
from mesh.observability.envoyconfig import TelemetryOptions
from tests.unit.controlplane.conftest import World


def _hcms(world: World, proxy: object) -> dict[str, list[hcm.HttpConnectionManager]]:
    out: dict[str, list[hcm.HttpConnectionManager]] = {}
    for name, lst in world.snapshot(proxy).resources(rt.LISTENER).items.items():  # type: ignore[arg-type]
        assert isinstance(lst, listener_pb2.Listener)
        for chain in lst.filter_chains:
            m = hcm.HttpConnectionManager()
            chain.filters[0].typed_config.Unpack(m)
            out.setdefault(name, []).append(m)
    return out


def _log_names(ms: list[hcm.HttpConnectionManager]) -> set[str]:
    names = set()
    for m in ms:
        for log in m.access_log:
            cfg = als_pb2.HttpGrpcAccessLogConfig()
            log.typed_config.Unpack(cfg)
            names.add(cfg.common_config.log_name)
    return names


def test_outbound_and_gateway_report_as_source_inbound_as_destination() -> None:
    world = World(build_policies("e2e"))
    world.push = PushContext(world.config, world.pods, options=MeshOptions(telemetry=TelemetryOptions(sampling=5)))
    sidecar = _hcms(world, world.sidecar("reviews-v1-0"))
    outbound = next(v for k, v in sidecar.items() if k.endswith("_15001"))
    inbound = next(v for k, v in sidecar.items() if k.endswith("_9080"))
    assert _log_names(outbound) == {"istio-source"} and _log_names(inbound) == {"istio-destination"}
    assert all(m.tracing.random_sampling.value == 5 for m in outbound + inbound)
    gateway = [m for ms in _hcms(world, world.gateway).values() for m in ms]
    assert _log_names(gateway) == {"istio-source"}


def test_without_telemetry_no_logger_and_no_tracer() -> None:
    world = World(build_policies("e2e"))
    for ms in _hcms(world, world.sidecar("reviews-v1-0")).values():
        assert all(not m.access_log and not m.HasField("tracing") for m in ms)
