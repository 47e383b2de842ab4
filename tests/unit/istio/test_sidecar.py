"""The Sidecar resource's scope as tables: which Sidecar applies to a workload, and what its egress hosts select."""

from __future__ import annotations

import pytest

from mesh.api import VirtualService
from mesh.api.helpers import to
from mesh.api.networking import HTTPRoute
from mesh.api.sidecar import IstioEgressListener, OutboundTrafficPolicy, Sidecar, SidecarPort, SidecarWorkloadSelector
from mesh.istio import ROOT_NAMESPACE, SidecarScope, applicable_sidecar

REVIEWS = "reviews.default.svc.cluster.local"
DB = "db.data.svc.cluster.local"
MAIL = "mail.ops.svc.cluster.local"


def sidecar(
    name: str = "default",
    namespace: str = "default",
    hosts: tuple[str, ...] = ("./*",),
    selector: dict[str, str] | None = None,
    port: int | None = None,
    policy: str | None = None,
) -> Sidecar:
    return Sidecar(
        name=name,
        namespace=namespace,
        workload_selector=SidecarWorkloadSelector(labels=selector) if selector else None,
        egress=[IstioEgressListener(hosts=list(hosts), port=SidecarPort(number=port) if port else None)],
        outbound_traffic_policy=OutboundTrafficPolicy(mode=policy) if policy else None,
    )


SELECTING = sidecar("reviews-only", selector={"app": "reviews"})
NAMESPACE_DEFAULT = sidecar("ns-default")
MESH_DEFAULT = sidecar("mesh-default", namespace=ROOT_NAMESPACE)
OTHER_NAMESPACE = sidecar("other", namespace="data")


@pytest.mark.parametrize(
    ("sidecars", "namespace", "labels", "expected"),
    [
        ([], "default", {"app": "reviews"}, None),
        ([SELECTING, NAMESPACE_DEFAULT, MESH_DEFAULT], "default", {"app": "reviews"}, "reviews-only"),
        ([SELECTING, NAMESPACE_DEFAULT, MESH_DEFAULT], "default", {"app": "ratings"}, "ns-default"),
        ([SELECTING, MESH_DEFAULT], "default", {"app": "ratings"}, "mesh-default"),  # root namespace: mesh default
        ([SELECTING, NAMESPACE_DEFAULT], "ops", {"app": "reviews"}, None),  # another namespace's Sidecars
        ([OTHER_NAMESPACE], "default", {}, None),
        ([sidecar("b"), sidecar("a")], "default", {}, "a"),  # equal candidates: by name
        # a selecting Sidecar of the root namespace is not a mesh default
        ([sidecar("root-sel", namespace=ROOT_NAMESPACE, selector={"app": "x"})], "default", {"app": "x"}, None),
    ],
)
def test_which_sidecar_applies(
    sidecars: list[Sidecar], namespace: str, labels: dict[str, str], expected: str | None
) -> None:
    chosen = applicable_sidecar(sidecars, namespace, labels)
    assert (chosen.name if chosen else None) == expected


@pytest.mark.parametrize(
    ("hosts", "namespace", "fqdn", "selected"),
    [
        (("./*",), "default", REVIEWS, True),
        (("./*",), "data", DB, False),
        (("*/*",), "data", DB, True),
        (("data/*",), "data", DB, True),
        (("data/*",), "default", REVIEWS, False),
        (("~/*",), "default", REVIEWS, False),  # `~`: no namespace at all
        (("*/db.data.svc.cluster.local",), "data", DB, True),
        (("*/db.data.svc.cluster.local",), "default", REVIEWS, False),
        (("data/db",), "data", DB, False),  # short names are not resolved (Istio wants FQDNs here)
        (("*/*.data.svc.cluster.local",), "data", DB, True),
        (("*/*.svc.cluster.local",), "ops", MAIL, True),
        (("*/*.ops.svc.cluster.local",), "data", DB, False),
        (("./*", "data/*"), "data", DB, True),  # any host of a listener
    ],
)
def test_egress_hosts_select_services(hosts: tuple[str, ...], namespace: str, fqdn: str, selected: bool) -> None:
    scope = SidecarScope.of(sidecar(hosts=hosts), "default")
    assert scope.selects_service(namespace, fqdn) is selected


def test_the_mesh_default_reads_dot_as_the_workloads_namespace() -> None:
    scope = SidecarScope.of(MESH_DEFAULT, "data")
    assert scope.selects_service("data", DB)
    assert not scope.selects_service("default", REVIEWS)
    assert scope.key == (ROOT_NAMESPACE, "mesh-default", "data")  # one scope per borrowing namespace


def test_a_listener_port_limits_the_ports_a_service_is_visible_on() -> None:
    scope = SidecarScope.of(
        Sidecar(
            name="s",
            egress=[
                IstioEgressListener(port=SidecarPort(number=9080, protocol="HTTP", name="http"), hosts=["./*"]),
                IstioEgressListener(hosts=["data/*"]),
            ],
        ),
        "default",
    )
    assert scope.selects_service("default", REVIEWS, 9080)
    assert not scope.selects_service("default", REVIEWS, 8080)
    assert scope.selects_service("data", DB, 5432)


def test_no_sidecar_or_no_egress_sees_everything() -> None:
    for scope in (SidecarScope.of(None, "default"), SidecarScope.of(Sidecar(name="s"), "default")):
        assert scope.unscoped and scope.selects_service("ops", MAIL)


@pytest.mark.parametrize(
    ("vs_namespace", "vs_hosts", "selected"),
    [
        ("default", ["reviews"], True),  # short host resolved in the VirtualService's namespace
        ("ops", ["reviews.default.svc.cluster.local"], False),  # `./*`: VirtualServices of the namespace only
        ("default", ["*.default.svc.cluster.local"], True),
        ("default", ["db.data.svc.cluster.local"], True),  # `./*` selects by the VirtualService's namespace
    ],
)
def test_egress_hosts_select_virtual_services(vs_namespace: str, vs_hosts: list[str], selected: bool) -> None:
    vs = VirtualService(name="vs", namespace=vs_namespace, hosts=vs_hosts, http=[HTTPRoute(route=[to("reviews")])])
    assert SidecarScope.of(NAMESPACE_DEFAULT, "default").selects_virtual_service(vs) is selected


@pytest.mark.parametrize(
    ("policy", "mesh", "expected"),
    [
        (None, "ALLOW_ANY", "ALLOW_ANY"),
        ("REGISTRY_ONLY", "ALLOW_ANY", "REGISTRY_ONLY"),
        ("ALLOW_ANY", "REGISTRY_ONLY", "ALLOW_ANY"),
    ],
)
def test_outbound_traffic_policy_overrides_the_mesh(policy: str | None, mesh: str, expected: str) -> None:
    assert SidecarScope.of(sidecar(policy=policy), "default").outbound_traffic_policy(mesh) == expected
