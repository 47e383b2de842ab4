"""Faults lose nothing: a dead control plane or a crashed Envoy never takes the last good config away."""

from __future__ import annotations

import time

from mesh.harness.under_test import LocalMeshUnderTest


def _ok(mesh: LocalMeshUnderTest) -> int:
    return mesh.ingress("bookinfo.local").get("/productpage").status


def _connected(mesh: LocalMeshUnderTest, pods: list[str], want: int, timeout: float) -> dict[str, int]:
    """Each sidecar's `control_plane.connected_state` (1: ADS stream up), polled until all equal `want`."""
    deadline = time.monotonic() + timeout
    while True:
        state = {
            p: mesh.proxy_stats(p, r"^control_plane\.connected_state$").get("control_plane.connected_state", -1)
            for p in pods
        }
        if all(v == want for v in state.values()) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_traffic_flows_while_the_control_plane_is_down_and_proxies_resync_after(mesh: LocalMeshUnderTest) -> None:
    local = mesh.mesh
    assert local.xds is not None
    pods = [p.name for p in local.registry.pods]
    assert _connected(mesh, pods, 1, timeout=5) == dict.fromkeys(pods, 1)
    local.xds.stop(0)
    try:
        # every Envoy really lost its ADS stream (its own control_plane.connected_state), and traffic still flows
        assert _connected(mesh, pods, 0, timeout=15) == dict.fromkeys(pods, 0)
        assert [_ok(mesh) for _ in range(20)] == [200] * 20
    finally:
        local.xds = local.serve_xds()
    assert _connected(mesh, pods, 1, timeout=30) == dict.fromkeys(pods, 1)  # and every one reconnected
    ids = [p.id for p in local.registry.proxies]
    results = local.pilot.cache.wait_synced(ids, timeout=15)
    deadline = time.monotonic() + 15
    while not all(local.pilot.cache.sync_state(i).state == "SYNCED" for i in ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {i: local.pilot.cache.sync_state(i).state for i in ids} == dict.fromkeys(ids, "SYNCED"), results
    assert _ok(mesh) == 200


def test_a_crashed_sidecar_is_restarted_and_gets_its_config_back(mesh: LocalMeshUnderTest) -> None:

    local = mesh.mesh
    pod = next(p for p in local.registry.pods if p.name == "details-v1-0")
    before = next(s for s in local.supervisor.status() if s["name"] == "envoy/details-v1-0")["restarts"]
    local.supervisor.kill("envoy/details-v1-0")
    assert local.supervisor.wait_ready("envoy/details-v1-0", local.admin(pod).ready, timeout=20)
    after = next(s for s in local.supervisor.status() if s["name"] == "envoy/details-v1-0")["restarts"]
    assert after == before + 1
    r = mesh.ingress("bookinfo.local").get("/productpage")
    assert r.status == 200 and r.call("details")["status"] == 200


def test_a_crashed_app_leaves_eds_until_it_is_ready_again(mesh: LocalMeshUnderTest) -> None:
    """Like a failing readiness probe: the endpoint turns UNHEALTHY in every proxy, then HEALTHY after restart."""

    local = mesh.mesh
    pod = next(p for p in local.registry.pods if p.name == "reviews-v1-1")
    productpage = next(p for p in local.registry.pods if p.service == "productpage")
    admin = local.admin(productpage)

    def state() -> str:
        for cs in admin.clusters()["cluster_statuses"]:
            if cs["name"] == "outbound|9080|v1|reviews.default.svc.cluster.local":
                for h in cs.get("host_statuses", []):
                    if h["address"]["socket_address"]["address"] == pod.ip:
                        return str(h["health_status"].get("eds_health_status", "HEALTHY"))
        return "ABSENT"

    def wait_for(want: str, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if state() == want:
                return True
            time.sleep(0.02)
        return False

    assert state() == "HEALTHY"
    local.supervisor.kill("app/reviews-v1-1")
    assert wait_for("UNHEALTHY"), state()
    assert wait_for("HEALTHY"), state()  # restarted, ready, back in EDS


def test_a_nacked_push_is_rolled_back_and_the_last_good_config_keeps_serving(mesh: LocalMeshUnderTest) -> None:
    """Analysis would catch this regex; skip it so Envoy itself rejects the push."""
    import pytest

    from mesh.api import HTTPMatchRequest, HTTPRoute, StringMatch, VirtualService, helpers
    from mesh.errors import PushRejected

    from ..conftest import replace

    local = mesh.mesh
    before = {p.id: local.pilot.cache.status(p.id).types for p in local.registry.proxies}
    bad = VirtualService(
        name="reviews",
        hosts=["reviews"],
        http=[
            HTTPRoute(match=[HTTPMatchRequest(uri=StringMatch(regex="/(?!x)"))], route=[helpers.to("reviews", "v1")]),
            HTTPRoute(route=[helpers.to("reviews", "v1")]),
        ],
    )
    with pytest.raises(PushRejected) as e:
        local.apply(replace(mesh.config, bad), analyze=False)
    assert "invalid perl operator" in str(e.value) or "regex" in str(e.value).lower()
    sidecars = {p.id for p in local.registry.proxies if p.kind == "sidecar"}
    assert set(e.value.rejections) == sidecars  # every sidecar has the reviews routes; the gateway does not
    ids = [p.id for p in local.registry.proxies]
    assert {i: local.pilot.cache.sync_state(i).state for i in ids} == dict.fromkeys(ids, "SYNCED")
    for p in local.registry.proxies:  # the versions every proxy ACKs are the ones from before the bad push
        from mesh.controlplane.xds import resources as rt

        now = local.pilot.cache.status(p.id).types
        assert now[rt.ROUTE].acked == before[p.id][rt.ROUTE].acked
    r = mesh.ingress("bookinfo.local").get("/productpage")
    assert r.status == 200 and r.call("reviews")["status"] == 200


def test_access_logs_record_each_request_when_asked(tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    """`mesh up --access-log`: the caller's sidecar logs the route's cluster and the response code."""
    import time

    from mesh.compile import build_policies
    from mesh.dataplane.addresses import allocate_block
    from mesh.targets.local import LocalMesh, LocalOptions

    block = allocate_block()
    local = LocalMesh(
        build_policies("dev"),
        LocalOptions(
            state_dir=tmp_path_factory.mktemp("accesslog"),
            access_log=True,
            ingress_host=block.gateway_ip,
            loopback_block=block.b,
        ),
    )
    local.start()
    try:
        from mesh.harness.client import HttpClient

        r = HttpClient(local.ingress_url, host="bookinfo.local").get("/productpage")
        assert r.status == 200
        rid = r.json["request_id"]  # the gateway (the edge) assigns it
        log = local.run_dir / "envoy-productpage-v1-0.log"

        def lines() -> list[str]:
            return [
                ln for ln in log.read_text().splitlines() if rid in ln and "reviews.default.svc.cluster.local" in ln
            ]

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not lines():
            time.sleep(0.05)  # Envoy flushes access logs on its own timer
        assert any("outbound|9080|" in ln and " 200 " in ln for ln in lines()), lines()
    finally:
        local.stop()
