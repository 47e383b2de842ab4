"""The `e2e` environment's extra service: `echo`, an httpbin-like target for resilience tests.

Its sample-app test hooks (x-fail-pod, x-fail-times, x-delay-ms, ...) make failures deterministic, and one
route per behaviour keeps each test's policy visible here.
"""

from __future__ import annotations

from mesh.api import (
    Destination,
    DestinationRule,
    HTTPRoute,
    LoadBalancerSettings,
    OutlierDetection,
    RouteDestination,
    Service,
    ServicePort,
    Subset,
    TCPRoute,
    TrafficPolicy,
    Version,
    VirtualService,
)
from mesh.api import helpers as h
from policies.workloads import APP, IMAGE

echo = Service(
    name="echo",
    versions=[
        Version(name="v1", replicas=3, command=APP, image=IMAGE),
        Version(name="v2", replicas=1, command=APP, image=IMAGE),
    ],
)


def echo_policies() -> list[VirtualService | DestinationRule]:
    return [
        DestinationRule(
            name="echo",
            host="echo",
            traffic_policy=TrafficPolicy(load_balancer=LoadBalancerSettings(simple="ROUND_ROBIN")),
            subsets=[
                Subset(name="v1", labels={"version": "v1"}),
                Subset(name="v2", labels={"version": "v2"}),
                # same pods as v1, its own cluster: ejections here never disturb other tests
                Subset(
                    name="ejecting",
                    labels={"version": "v1"},
                    traffic_policy=TrafficPolicy(
                        outlier_detection=OutlierDetection(
                            consecutive_5xx_errors=3, interval="1s", base_ejection_time="30s", max_ejection_percent=100
                        )
                    ),
                ),
            ],
        ),
        VirtualService(
            name="echo",
            hosts=["echo"],
            http=[
                HTTPRoute(
                    name="retry",
                    match=[h.when_path(prefix="/retry")],
                    route=[h.to("echo", "v1")],
                    retries=h.retries(3, per_try_timeout="300ms", retry_on="5xx"),
                ),
                HTTPRoute(
                    name="noretry",
                    match=[h.when_path(prefix="/noretry")],
                    route=[h.to("echo", "v1")],
                    retries=h.retries(0),
                ),
                HTTPRoute(
                    name="timeout",
                    match=[h.when_path(prefix="/timeout")],
                    route=[h.to("echo", "v1")],
                    timeout="200ms",
                    retries=h.retries(0),
                ),
                HTTPRoute(name="outlier", match=[h.when_path(prefix="/outlier")], route=[h.to("echo", "ejecting")]),
                h.split("echo", {"v1": 90, "v2": 10}, name="split", match=[h.when_path(prefix="/split")]),
                HTTPRoute(name="default", route=[h.to("echo", "v1")]),
            ],
        ),
    ]


# TCP: connections are routed, not requests (needs `mesh up --interception iptables`). Each version echoes lines
# prefixed with its name, so a client counts connections per version.
tcp_echo = Service(
    name="tcp-echo",
    ports=[ServicePort(number=9000, name="tcp")],
    versions=[
        Version(name="v1", command=[*APP, "--tcp-echo"], image=IMAGE),
        Version(name="v2", command=[*APP, "--tcp-echo"], image=IMAGE),
    ],
)


def _dest(host: str, subset: str, weight: int) -> RouteDestination:
    return RouteDestination(destination=Destination(host=host, subset=subset), weight=weight)


def tcp_echo_policies(v2_weight: int = 20) -> list[VirtualService | DestinationRule]:
    """Subsets by version and a connection split between them (Istio's tcp-traffic-shifting task)."""
    return [
        h.subsets_by_version(tcp_echo),
        VirtualService(
            name="tcp-echo",
            hosts=["tcp-echo"],
            tcp=[TCPRoute(route=[_dest("tcp-echo", "v1", 100 - v2_weight), _dest("tcp-echo", "v2", v2_weight)])],
        ),
    ]
