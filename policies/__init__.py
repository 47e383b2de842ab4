"""Bookinfo-style sample: the policies a platform team would keep in git, one `build(env)` per environment.

productpage -> details
productpage -> reviews (v1: no ratings, v2/v3: call ratings)
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.api import (
    AuthorizationPolicy,
    ConnectionPoolSettings,
    HTTPRoute,
    HTTPSettings,
    LoadBalancerSettings,
    MeshConfig,
    Operation,
    OutlierDetection,
    Rule,
    RuleFrom,
    RuleTo,
    Source,
    TrafficPolicy,
    VirtualService,
    WorkloadSelector,
)
from mesh.api import helpers as h
from policies import testbed
from policies.workloads import SERVICES, details, productpage, ratings, reviews


@dataclass(frozen=True)
class Values:
    """What differs between environments."""

    reviews_canary_weight: int  # percent of non-A/B traffic sent to reviews v3
    ratings_faults: bool  # chaos hooks on ratings (header-triggered, never on plain traffic)
    ingress_hosts: tuple[str, ...] = ("bookinfo.local", "localhost")
    testbed: bool = False  # the e2e suite's echo service


ENVIRONMENTS = {
    "dev": Values(reviews_canary_weight=50, ratings_faults=True),
    # what the e2e suite runs against: dev plus the `echo` test service (policies/testbed.py)
    "e2e": Values(reviews_canary_weight=50, ratings_faults=True, testbed=True),
    "prod": Values(reviews_canary_weight=10, ratings_faults=False, ingress_hosts=("bookinfo.example.com",)),
}


def build(env: str) -> MeshConfig:
    values = ENVIRONMENTS[env]
    config = MeshConfig().add(*SERVICES)

    # Ingress: one host, the productpage behind it.
    config.add(
        *h.ingress(
            "bookinfo",
            hosts=list(values.ingress_hosts),
            routes={"/productpage": "productpage", "/static": "productpage"},
        )
    )

    # Subsets for every service, from its versions (reviews gets its resilience policy below).
    config.add(h.subsets_by_version(svc) for svc in (productpage, details, ratings))

    # reviews: the user "jason" sees v2 (A/B); everyone else rides the v1 -> v3 canary.
    weight = values.reviews_canary_weight
    config.add(
        h.header_ab(
            "reviews",
            header="end-user",
            value="jason",
            match_subset="v2",
            default=h.split("reviews", {"v1": 100 - weight, "v3": weight}, name="canary"),
        )
    )

    # ratings: header-triggered chaos in dev, plain routing everywhere.
    ratings_rules = []
    if values.ratings_faults:
        ratings_rules += [
            HTTPRoute(
                name="chaos-abort",
                match=[h.when_header("x-chaos", exact="abort")],
                route=[h.to("ratings", "v1")],
                fault=h.abort(503),
            ),
            HTTPRoute(
                name="chaos-delay",
                match=[h.when_header("x-chaos", exact="delay")],
                route=[h.to("ratings", "v1")],
                fault=h.delay("1s"),
            ),
        ]
    ratings_rules.append(
        HTTPRoute(
            name="default",
            route=[h.to("ratings", "v1")],
            timeout="3s",
            retries=h.retries(2, per_try_timeout="1s"),
        )
    )
    config.add(VirtualService(name="ratings", hosts=["ratings"], http=ratings_rules))
    config.add(VirtualService(name="details", hosts=["details"], http=[HTTPRoute(route=[h.to("details", "v1")])]))

    # Resilience for reviews: bounded queues, eject a replica after 5 straight 5xx.
    config.add(
        h.subsets_by_version(
            reviews,
            TrafficPolicy(
                load_balancer=LoadBalancerSettings(simple="ROUND_ROBIN"),
                connection_pool=ConnectionPoolSettings(http=HTTPSettings(http1_max_pending_requests=100)),
                outlier_detection=OutlierDetection(consecutive_5xx_errors=5, interval="5s", base_ejection_time="30s"),
            ),
        )
    )

    # Zero trust: STRICT mTLS mesh-wide; ratings only answers reviews; details only productpage (GET).
    config.add(h.strict_mtls())
    config.add(h.allow_only_from(ratings, reviews))
    config.add(
        AuthorizationPolicy(
            name="details-viewer",
            selector=WorkloadSelector(match_labels={"app": details.name}),
            rules=[
                Rule(
                    from_=[RuleFrom(source=Source(principals=[productpage.identity.removeprefix("spiffe://")]))],
                    to=[RuleTo(operation=Operation(methods=["GET"]))],
                )
            ],
        )
    )
    if values.testbed:
        config.add(testbed.echo, *testbed.echo_policies())
    return config
