"""HTTP/2 and gRPC through real sidecars, in both interception modes: sidecar-to-sidecar HTTP/2 over mTLS where
Istio upgrades (h2UpgradePolicy), a gRPC service (`grpc-` port) routed by method and header, gRPC-status fault
aborts, gRPC retries, and the gRPC status in the access log.

The gRPC client is the sample app's own (`python -m mesh.sampleapp.grpc_server call`), run where a pod's app
runs: inside the caller's network namespace (iptables mode, dialling `greeter:9090`), or dialling the caller's
sidecar outbound listener over h2c with `:authority: greeter:9090` (HTTP_PROXY mode; grpc's own proxy support
would send CONNECT, which a sidecar does not serve)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace as dc_replace
from typing import Any

import pytest

from mesh.api import (
    ConnectionPoolSettings,
    DestinationRule,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPSettings,
    MeshConfig,
    Service,
    ServicePort,
    StringMatch,
    TrafficPolicy,
    Version,
    VirtualService,
    helpers,
)
from mesh.api.networking import Abort, ConnectionKeepalive, HTTPFaultInjection, Percent
from mesh.dataplane import netns
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.runtime import SIDECAR_OUTBOUND_PORT, Pod

from ..conftest import replace

pytestmark = pytest.mark.e2e

GRPC_APP = ["{python}", "-m", "mesh.sampleapp.grpc_server"]
HTTP_APP = ["{python}", "-m", "mesh.sampleapp"]
GREETER = "greeter.default.svc.cluster.local"
WEB = "web.default.svc.cluster.local"
CALLER = "client-v1-0"


def _config() -> MeshConfig:
    greeter = Service(
        name="greeter",
        ports=[ServicePort(number=9090, name="grpc-echo", protocol="grpc")],
        versions=[Version(name="v1", command=GRPC_APP), Version(name="v2", command=GRPC_APP)],
    )
    web = Service(
        name="web", ports=[ServicePort(number=9080, name="http-web")], versions=[Version(name="v1", command=HTTP_APP)]
    )
    client = Service(name="client", versions=[Version(name="v1", command=HTTP_APP)])
    subsets = helpers.subsets_by_version(greeter)
    return MeshConfig(services=[client, greeter, web], resources=[subsets])


@pytest.fixture(scope="module", params=["proxy", "iptables"])
def grpc_mesh(request: pytest.FixtureRequest) -> Iterator[LocalMeshUnderTest]:
    if request.param == "iptables":
        ok, why = netns.available()
        if not ok:
            pytest.fail(
                f"transparent interception cannot run here: {why} (run as root; apt-get install iproute2 iptables)"
            )
    m = LocalMeshUnderTest(_config(), interception=request.param)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def policies(grpc_mesh: LocalMeshUnderTest) -> Iterator[LocalMeshUnderTest]:
    """The mesh, with its original policies and mesh options restored after the test."""
    config, options = grpc_mesh.config, grpc_mesh.mesh.pilot.options
    yield grpc_mesh
    grpc_mesh.mesh.pilot.options = options
    grpc_mesh.apply(config)


def _pod(m: LocalMeshUnderTest, name: str) -> Pod:
    return next(p for p in m.mesh.registry.pods if p.name == name)


def grpc_calls(
    m: LocalMeshUnderTest,
    method: str,
    count: int = 1,
    metadata: dict[str, str] | None = None,
    caller: str = CALLER,
    service: str = "greeter:9090",
) -> list[dict[str, Any]]:
    """`count` calls of greeter's `method` from the caller pod's position, each `{"code": ..., "reply"|"details"}`."""
    argv = [sys.executable, "-m", "mesh.sampleapp.grpc_server", "call"]
    pod = _pod(m, caller)
    if m.mesh.capture is not None:
        argv = netns.exec_argv(m.mesh.capture.namespace(pod.name), [*argv, service])
    else:
        argv += [f"{pod.ip}:{SIDECAR_OUTBOUND_PORT}", "--authority", service]
    argv += [method, "--count", str(count)]
    for k, v in (metadata or {}).items():
        argv += ["-H", f"{k}={v}"]
    env = {"PATH": "/usr/bin:/bin", "GRPC_DNS_RESOLVER": "native", "GRPC_ENABLE_FORK_SUPPORT": "false"}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _stat(m: LocalMeshUnderTest, pod: str, name: str) -> int:
    return m.mesh.admin(_pod(m, pod)).stats("^" + name.replace(".", r"\.").replace("|", r"\|") + "$").get(name, 0)


def test_a_grpc_call_crosses_two_sidecars_over_mtls_http2(grpc_mesh: LocalMeshUnderTest) -> None:
    before = _stat(grpc_mesh, CALLER, f"cluster.outbound|9090||{GREETER}.upstream_cx_http2_total")
    (out,) = grpc_calls(grpc_mesh, "Hello")
    assert out["code"] == "OK", out
    reply = out["reply"]
    assert reply["service"] == "greeter" and reply["method"] == "/meshops.sample.Echo/Hello"
    assert reply["peer"] == "spiffe://cluster.local/ns/default/sa/client"  # the callee saw the caller's mTLS identity
    assert _stat(grpc_mesh, CALLER, f"cluster.outbound|9090||{GREETER}.upstream_cx_http2_total") > before or (
        _stat(grpc_mesh, CALLER, f"cluster.outbound|9090||{GREETER}.upstream_cx_active") > 0
    )
    assert _stat(grpc_mesh, CALLER, f"cluster.outbound|9090||{GREETER}.upstream_cx_http1_total") == 0


def test_grpc_routing_by_method_and_header(policies: LocalMeshUnderTest) -> None:
    vs = VirtualService(
        name="greeter",
        hosts=["greeter"],
        http=[
            HTTPRoute(
                match=[HTTPMatchRequest(uri=StringMatch(prefix="/meshops.sample.Echo/Hello"))],
                route=[helpers.to("greeter", "v2")],
            ),
            HTTPRoute(
                match=[HTTPMatchRequest(headers={"x-canary": StringMatch(exact="yes")})],
                route=[helpers.to("greeter", "v2")],
            ),
            HTTPRoute(route=[helpers.to("greeter", "v1")]),
        ],
    )
    policies.apply(replace(policies.config, vs))
    assert {o["reply"]["version"] for o in grpc_calls(policies, "Hello", 5)} == {"v2"}
    assert {o["reply"]["version"] for o in grpc_calls(policies, "Echo", 5)} == {"v1"}
    assert {o["reply"]["version"] for o in grpc_calls(policies, "Echo", 5, {"x-canary": "yes"})} == {"v2"}


def test_grpc_status_fault_abort_and_its_access_log(policies: LocalMeshUnderTest) -> None:
    """`fault.abort.grpcStatus` answers the caller with that gRPC status from its own sidecar (the greeter never
    sees the call), and the caller's access log records it next to the HTTP status."""
    policies.mesh.pilot.options = dc_replace(policies.mesh.pilot.options, access_log=True)
    abort = HTTPFaultInjection(abort=Abort(grpc_status="RESOURCE_EXHAUSTED", percentage=Percent(value=100.0)))
    vs = VirtualService(
        name="greeter",
        hosts=["greeter"],
        http=[
            HTTPRoute(
                match=[HTTPMatchRequest(uri=StringMatch(exact="/meshops.sample.Echo/Echo"))],
                route=[helpers.to("greeter", "v1")],
                fault=abort,
            ),
            HTTPRoute(route=[helpers.to("greeter", "v1")]),
        ],
    )
    policies.apply(replace(policies.config, vs))
    (aborted,) = grpc_calls(policies, "Echo")
    assert aborted["code"] == "RESOURCE_EXHAUSTED", aborted
    assert "fault filter abort" in aborted["details"]
    (fine,) = grpc_calls(policies, "Hello")
    assert fine["code"] == "OK", fine
    log = policies.mesh.run_dir / f"envoy-{CALLER}.log"
    deadline = time.monotonic() + 10
    while True:  # Envoy flushes its file access log on a timer (1 s by default)
        lines = [ln for ln in log.read_text().splitlines() if "/meshops.sample.Echo/Echo" in ln]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines, f"no access-log line for the aborted call in {log}"
    assert '"POST /meshops.sample.Echo/Echo HTTP/2" 200 ResourceExhausted FI' in lines[-1], lines[-1]


def test_grpc_retries_on_unavailable(policies: LocalMeshUnderTest) -> None:
    """retryOn `unavailable` retries a call its server fails with UNAVAILABLE; a policy without it does not."""

    def with_retries(retry_on: str) -> VirtualService:
        return VirtualService(
            name="greeter",
            hosts=["greeter"],
            http=[HTTPRoute(route=[helpers.to("greeter", "v1")], retries=HTTPRetry(attempts=4, retry_on=retry_on))],
        )

    policies.apply(replace(policies.config, with_retries("unavailable,cancelled")))
    (out,) = grpc_calls(policies, "Hello", metadata={"x-fail-times": "3"})
    assert out["code"] == "OK" and out["reply"]["attempt"] == 4, out
    policies.apply(replace(policies.config, with_retries("cancelled,deadline-exceeded")))
    (out,) = grpc_calls(policies, "Hello", metadata={"x-fail-times": "1"})
    assert out["code"] == "UNAVAILABLE" and "failing attempt 1" in out["details"], out


def _web_connections(m: LocalMeshUnderTest) -> tuple[int, int, int]:
    """(HTTP/1.1 and HTTP/2 connections the caller opened to web, HTTP/2 connections web's sidecar accepted)."""
    web = m.mesh.registry.pods
    callee = next(p for p in web if p.service == "web")
    prefix = f"cluster.outbound|9080||{WEB}"
    inbound = m.mesh.admin(callee).stats(r"downstream_cx_http2_total")
    accepted = sum(v for k, v in inbound.items() if k.startswith("http.inbound_") and "_9080." in k)
    return (
        _stat(m, CALLER, f"{prefix}.upstream_cx_http1_total"),
        _stat(m, CALLER, f"{prefix}.upstream_cx_http2_total"),
        accepted,
    )


def _get_web(m: LocalMeshUnderTest) -> None:
    client = m.from_pod(CALLER)
    r = client.get("http://web:9080/h2")
    assert r.status == 200 and r.json["service"] == "web", r.text  # the HTTP/1.1 app still answers


def _pool(policy: str | None = None, **http: Any) -> DestinationRule:
    return DestinationRule(
        name="web",
        host="web",
        traffic_policy=TrafficPolicy(
            connection_pool=ConnectionPoolSettings(http=HTTPSettings(h2_upgrade_policy=policy, **http))
        ),
    )


def test_h2_upgrade_policy_decides_the_protocol_between_sidecars(policies: LocalMeshUnderTest) -> None:
    """An HTTP/1.1 port: DEFAULT keeps HTTP/1.1 between the sidecars, UPGRADE opens HTTP/2 (over mTLS), which the
    callee's sidecar accepts and turns back into HTTP/1.1 for its app; the mesh-wide UPGRADE yields to a rule's
    DO_NOT_UPGRADE."""
    base = policies.config
    policies.apply(replace(policies.config, _pool("DEFAULT")))
    h1, h2, accepted = _web_connections(policies)
    _get_web(policies)
    h1_after, h2_after, _ = _web_connections(policies)
    assert h2_after == h2 and h1_after >= h1  # a pooled HTTP/1.1 connection may be reused: never an HTTP/2 one

    policies.apply(replace(policies.config, _pool("UPGRADE")))
    _get_web(policies)
    _, h2_up, accepted_up = _web_connections(policies)
    assert h2_up > h2_after and accepted_up > accepted

    policies.mesh.pilot.options = dc_replace(policies.mesh.pilot.options, h2_upgrade_policy="UPGRADE")
    policies.apply(replace(policies.config, _pool("DO_NOT_UPGRADE")))
    h1_before, _, _ = _web_connections(policies)
    _get_web(policies)
    h1_no, h2_no, _ = _web_connections(policies)
    assert h1_no > h1_before and h2_no == h2_up
    policies.apply(base)  # no rule: the mesh-wide UPGRADE applies
    _get_web(policies)
    assert _web_connections(policies)[1] > h2_no


def test_use_client_protocol_follows_the_caller(policies: LocalMeshUnderTest) -> None:
    """useClientProtocol: an HTTP/1.1 caller reaches web over HTTP/1.1, an HTTP/2 caller (a gRPC client dialling
    web's port) over HTTP/2, on the same cluster."""
    policies.apply(replace(policies.config, _pool(use_client_protocol=True)))
    h1, h2, _ = _web_connections(policies)
    _get_web(policies)
    h1_after, h2_after, _ = _web_connections(policies)
    assert h2_after == h2
    grpc_calls(policies, "Hello", service="web:9080")  # web is no gRPC server: only the protocol matters here
    assert _web_connections(policies)[1] > h2_after
    assert h1_after >= h1


def test_max_concurrent_streams_spreads_streams_over_connections(policies: LocalMeshUnderTest) -> None:
    """maxConcurrentStreams 1 on an upgraded cluster: 4 concurrent slow requests need 4 HTTP/2 connections (one
    connection would carry them all without the limit)."""
    policies.apply(replace(policies.config, _pool("UPGRADE", max_concurrent_streams=1, idle_timeout="60s")))
    _, h2, _ = _web_connections(policies)
    client = policies.from_pod(CALLER)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: client.get("http://web:9080/slow", {"x-delay-ms": "400"}), range(4)))
    assert all(r.status == 200 for r in replies)
    assert _web_connections(policies)[1] - h2 >= 4


def test_http2_keepalive_reaches_the_live_cluster(policies: LocalMeshUnderTest) -> None:
    """http2KeepAlive: the caller's Envoy runs web's cluster with connection keepalive PINGs every 5 s (read
    from its live config; a PING Envoy answers leaves no other trace)."""
    keepalive = ConnectionKeepalive(interval="5s", timeout="2s")
    policies.apply(replace(policies.config, _pool("UPGRADE", http2_keep_alive=keepalive)))
    _get_web(policies)
    dump = policies.mesh.admin(_pod(policies, CALLER)).config_dump("dynamic_active_clusters")
    (web,) = [c["cluster"] for c in dump["configs"] if c["cluster"]["name"] == f"outbound|9080||{WEB}"]
    assert list(_values(web, "connection_keepalive")) == [{"interval": "5s", "timeout": "2s"}]


def _values(doc: Any, key: str) -> Iterator[Any]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(doc, list):
        for v in doc:
            yield from _values(v, key)
