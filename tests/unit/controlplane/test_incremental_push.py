"""Dependency-indexed pushes: after every push of a random sequence of edits, each proxy's snapshot (kept from an
earlier push, or translated from the carried indexes) is byte for byte what a fresh translation of the same config
gives; a proxy no change reaches keeps its snapshot object; a rejected push leaves nothing carried behind."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from dataclasses import replace

import pytest

from mesh.api import (
    AuthorizationPolicy,
    DestinationRule,
    HTTPRoute,
    MeshConfig,
    PeerAuthentication,
    Resource,
    Service,
    ServicePort,
    Subset,
    Version,
    VirtualService,
)
from mesh.api import helpers as h
from mesh.api.registry import ServiceEntry, ServiceEntryPort
from mesh.api.sidecar import IstioEgressListener, Sidecar, SidecarWorkloadSelector
from mesh.compile import build_policies
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.pilot import Pilot, Translation
from mesh.controlplane.translate import MeshOptions, PushContext, build_snapshot
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.cache import SnapshotCache
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.errors import PushRejected
from mesh.runtime import Registry, gateway_proxy, pods_for

from .test_pilot import FakeProxy

STEPS = 50
SEEDS = range(6)

Wire = dict[str, dict[str, bytes]]


def _wire(snap: Snapshot) -> Wire:
    return {
        t: {n: m.SerializeToString(deterministic=True) for n, m in snap.resources(t).items.items()} for t in rt.ORDER
    }


def _base() -> MeshConfig:
    """The e2e policies (a gateway, VirtualServices, DestinationRules, mTLS, AuthorizationPolicies) with Sidecars
    (`_scoped`), and a second namespace with an HTTP and a TCP service."""
    config = _scoped()
    config.add(
        Service(
            name="cart",
            namespace="shop",
            versions=[Version(name="v1", replicas=1, command=["x"]), Version(name="v2", replicas=1, command=["x"])],
        ),
        Service(
            name="db",
            namespace="shop",
            ports=[ServicePort(number=5432, name="tcp-db")],
            versions=[Version(name="v1", replicas=1, command=["x"])],
        ),
    )
    return config


HOSTS = [
    "productpage",
    "reviews",
    "ratings",
    "details",
    "echo",
    "cart.shop.svc.cluster.local",
    "db.shop.svc.cluster.local",
]


class Edits:
    """Random edits in the form a reconciler applies them: a new config whose changed objects are new objects and
    every other object the same one."""

    def __init__(self, rng: random.Random, registry: Registry) -> None:
        self.rng, self.registry = rng, registry
        self.counter = itertools.count()

    def apply(self, config: MeshConfig, pilot: Pilot) -> MeshConfig:
        ops: list[tuple[Callable[[MeshConfig, Pilot], MeshConfig], int]] = [
            (self.virtual_service, 8),  # the kinds with a dependency rule, most often: their paths are the new ones
            (self.destination_rule, 4),
            (self.remove_one, 3),
            (self.sidecar, 1),
            (self.service, 1),
            (self.authorization_policy, 1),
            (self.peer_authentication, 1),
            (self.service_entry, 1),
            (self.health, 1),
            (self.labels, 1),
            (self.options, 1),
            (self.renew, 1),
            (self.nothing, 1),
        ]
        op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        if any(r.kind == "ServiceEntry" for r in config.resources) and self.rng.random() < 0.4:
            op = self.service_entry  # an entry makes every push a full one: keep it short-lived
        return op(config, pilot)

    def _put(self, config: MeshConfig, obj: Resource) -> MeshConfig:
        if self.rng.random() < 0.5:  # an edit keeps the object's position; an added one goes last
            resources = [obj if r.key == obj.key else r for r in config.resources]
            if obj not in resources:
                resources.append(obj)
            return MeshConfig(config.services, resources)
        return MeshConfig(config.services, [*(r for r in config.resources if r.key != obj.key), obj])

    def virtual_service(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        """A VirtualService claiming a service (or a wildcard), with a plain route, a canary split, a path match,
        a caller-label match, a CORS policy, a gateway binding or a narrowed exportTo."""
        rng = self.rng
        wild = ["*.shop.svc.cluster.local", "*.default.svc.cluster.local"]
        host = rng.choice(HOSTS) if rng.random() < 0.85 else rng.choice(wild)
        rule: dict[str, object] = {"route": [{"destination": {"host": rng.choice(HOSTS[:5])}}]}
        rule["timeout"] = f"{rng.randrange(1, 5)}s"
        if rng.random() < 0.15:
            rule["match"] = [{"uri": {"prefix": f"/p{rng.randrange(3)}"}}]
        if rng.random() < 0.1:
            rule["match"] = [{"sourceLabels": {"app": "productpage"}}]
        if rng.random() < 0.1:
            rule["corsPolicy"] = {"allowOrigins": [{"exact": "https://example.com"}]}
        http = [rule]
        if rng.random() < 0.5:
            w = rng.randrange(0, 101, 10)
            http.insert(0, h.split("reviews", {"v1": w, "v3": 100 - w}).model_dump(by_alias=True, exclude_none=True))
        name = rng.choice(["reviews", "ratings", "extra-a", "extra-b", "cart"])
        spec: dict[str, object] = {"name": name, "namespace": "shop" if name == "cart" else "default"}
        spec |= {"hosts": [host], "http": http}
        if rng.random() < 0.1:
            spec["gateways"] = ["bookinfo"]
        if rng.random() < 0.1:
            spec["exportTo"] = ["."]
        return self._put(config, VirtualService.model_validate(spec))

    def destination_rule(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        rng = self.rng
        host = rng.choice(HOSTS)
        subsets = [Subset(name=v, labels={"version": v}) for v in ("v1", "v2", "v3")[: rng.randrange(1, 4)]]
        tp = rng.choice([None, {"tls": {"mode": "DISABLE"}}, {"loadBalancer": {"simple": "RANDOM"}}])
        name = rng.choice(["reviews", "ratings", "extra-dr", "cart"])
        return self._put(
            config,
            DestinationRule.model_validate(
                {
                    "name": name,
                    "namespace": "shop" if name == "cart" else "default",
                    "host": host,
                    "subsets": [s.model_dump() for s in subsets],
                    "trafficPolicy": tp,
                }
            ),
        )

    def remove_one(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        removable = [r for r in config.resources if r.kind in ("VirtualService", "DestinationRule", "Sidecar")]
        if not removable:
            return config
        gone = self.rng.choice(removable)
        return MeshConfig(config.services, [r for r in config.resources if r is not gone])

    def sidecar(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        rng = self.rng
        app = rng.choice(["productpage", "reviews", "cart", None])
        hosts = [_egress(rng.choice([*HOSTS, "*", "shop/*"])) for _ in range(rng.randrange(1, 3))]
        sidecar = Sidecar(
            name=f"sc-{app or 'ns'}",
            namespace="shop" if app == "cart" else "default",
            workload_selector=SidecarWorkloadSelector(labels={"app": app}) if app else None,
            egress=[IstioEgressListener(hosts=hosts)],
        )
        return self._put(config, sidecar)

    def service(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        svc = Service(name=f"new-{next(self.counter)}", versions=[Version(name="v1", replicas=0, command=["x"])])
        return MeshConfig([*config.services, svc], config.resources)

    def authorization_policy(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        target = self.rng.choice(["ratings", "details", "reviews"])
        return self._put(
            config,
            AuthorizationPolicy.model_validate(
                {
                    "name": f"allow-{target}",
                    "selector": {"matchLabels": {"app": target}},
                    "rules": [
                        {
                            "from": [
                                {
                                    "source": {
                                        "principals": [f"cluster.local/ns/default/sa/{self.rng.choice(HOSTS[:5])}"]
                                    }
                                }
                            ]
                        }
                    ],
                }
            ),
        )

    def peer_authentication(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        mode = self.rng.choice(["STRICT", "PERMISSIVE", "DISABLE"])
        return self._put(config, PeerAuthentication.model_validate({"name": "ns", "mtls": {"mode": mode}}))

    def service_entry(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        if any(r.kind == "ServiceEntry" for r in config.resources):
            return MeshConfig(config.services, [r for r in config.resources if r.kind != "ServiceEntry"])
        entry = ServiceEntry(
            name="api",
            hosts=["api.example.com"],
            ports=[ServiceEntryPort(number=80, name="http", protocol="HTTP")],
            resolution="DNS",
            location="MESH_EXTERNAL",
        )
        return self._put(config, entry)

    def health(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        pod = self.rng.choice(self.registry.pods)
        self.registry.set_health(pod.name, pod.namespace, not pod.healthy)
        _join_republishes()
        return config

    def labels(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        pod = self.rng.choice(self.registry.pods)
        self.registry.add_pod(replace(pod, labels={**pod.labels, "tier": str(self.rng.randrange(3))}))
        return config

    def options(self, config: MeshConfig, pilot: Pilot) -> MeshConfig:
        vhds = self.rng.choice(["off", "on"])  # the sidecar route table whole, or its hosts over VHDS
        pilot.options = MeshOptions(access_log=self.rng.random() < 0.5, vhds=vhds)  # type: ignore[arg-type]
        return config

    def renew(self, config: MeshConfig, pilot: Pilot) -> MeshConfig:
        proxy = self.rng.choice(self.registry.proxies)
        pilot.ca.rotate(proxy.identity)  # an SVID renewal: that proxy's SDS changes
        return config

    def nothing(self, config: MeshConfig, _: Pilot) -> MeshConfig:
        return config


def _egress(host: str) -> str:
    """An egress host (`namespace/dnsName`) for one of HOSTS."""
    if "/" in host or host == "*":
        return host if "/" in host else "*/*"
    return f"*/{host}" if "." in host else f"default/{host}.default.svc.cluster.local"


def _join_republishes() -> None:
    for t in threading.enumerate():
        if t.name == "eds-push":
            t.join(10)


def _mesh(config: MeshConfig) -> tuple[Pilot, Registry]:
    counter = itertools.count(1)
    registry = Registry()
    for svc in config.services:
        for pod in pods_for(svc, lambda: (f"127.97.{next(counter)}.1", "127.97.0.2")):
            registry.add_pod(pod)
    registry.add_proxy(gateway_proxy("127.97.0.1", {80: ("127.0.0.1", 8080)}))
    return Pilot(registry, CertificateAuthority()), registry


def assert_equals_fresh(pilot: Pilot, translation: Translation) -> None:
    """Every proxy's snapshot equals a translation from nothing: a new push context, an empty memo, the same
    secrets."""
    inputs = translation.inputs
    fresh = PushContext(inputs.config, inputs.pods, options=pilot.options)
    assert [p.id for p in inputs.proxies] == sorted(translation.snapshots)
    for proxy in inputs.proxies:
        expected = build_snapshot(fresh, proxy, translation.secrets[proxy.id])
        assert _wire(translation.snapshots[proxy.id]) == _wire(expected), proxy.id


@pytest.mark.parametrize("seed", SEEDS)
def test_every_incremental_push_equals_a_fresh_translation(seed: int) -> None:
    rng = random.Random(seed)
    config = _base()
    pilot, registry = _mesh(config)
    edits = Edits(rng, registry)
    pilot.push(config, wait=0)
    kept = 0
    for _ in range(STEPS):
        config = edits.apply(config, pilot)
        pilot.push(config, wait=0)
        assert pilot.last is not None
        assert_equals_fresh(pilot, pilot.last)
        kept += len(pilot.last.snapshots) - pilot.last.translated
    assert kept > 0  # the sequence did exercise kept snapshots, not only full translations


def _scoped() -> MeshConfig:
    """Each sidecar of the e2e mesh sees only the services its Sidecar lists."""
    config = build_policies("e2e")
    calls = {"productpage": ["reviews", "details"], "reviews": ["ratings"], "echo": ["echo"]}
    for app, hosts in calls.items():
        config.add(
            Sidecar(
                name=app,
                workload_selector=SidecarWorkloadSelector(labels={"app": app}),
                egress=[IstioEgressListener(hosts=[f"./{x}.default.svc.cluster.local" for x in hosts])],
            )
        )
    config.add(Sidecar(name="default", egress=[IstioEgressListener(hosts=["./details.default.svc.cluster.local"])]))
    return config


def _ratings(weight: int) -> VirtualService:
    return VirtualService(
        name="ratings", hosts=["ratings"], http=[HTTPRoute(route=[h.to("ratings")], timeout=f"{weight}s")]
    )


def _swap(config: MeshConfig, obj: VirtualService) -> MeshConfig:
    return MeshConfig(config.services, [obj if r.key == obj.key else r for r in config.resources])


def test_a_route_change_translates_only_the_proxies_that_call_the_service() -> None:
    config = _scoped()
    pilot, registry = _mesh(config)
    pilot.push(config, wait=0)
    before = pilot.last
    assert before is not None and before.translated == len(registry.proxies)
    pilot.push(_swap(config, _ratings(3)), wait=0)
    after = pilot.last
    assert after is not None
    callers = {p.id for p in registry.proxies if p.labels.get("app") == "reviews"} | {
        p.id for p in registry.proxies if p.kind == "router"
    }
    changed = {n for n, s in after.snapshots.items() if s is not before.snapshots[n]}
    assert changed == callers and after.translated == len(callers)
    assert_equals_fresh(pilot, after)


def test_a_rejected_push_leaves_the_applied_translation_carried() -> None:
    """The rejected config's indexes are not what the next push starts from: after a NACK, a push of a third
    config is translated against the last applied one and equals a fresh translation."""
    config = _scoped()
    registry = Registry()
    counter = itertools.count(1)
    for svc in config.services:
        for pod in pods_for(svc, lambda: (f"127.96.{next(counter)}.1", "127.96.0.2")):
            registry.add_pod(pod)
    cache = SnapshotCache()
    pilot = Pilot(registry, CertificateAuthority(), cache)
    reject = {"on": False}
    for p in registry.proxies:
        FakeProxy(cache, p.id, lambda _: {rt.ROUTE} if reject["on"] else set())
    pilot.push(config, wait=5.0)
    applied = pilot.last
    reject["on"] = True
    with pytest.raises(PushRejected):
        pilot.push(_swap(config, _ratings(7)), wait=5.0)
    assert pilot.applied is applied and pilot.last is not applied
    reject["on"] = False
    third = _swap(config, _ratings(9))
    pilot.push(third, wait=5.0)
    assert pilot.last is not None and applied is not None
    assert pilot.last.inputs.config is not applied.inputs.config
    assert_equals_fresh(pilot, pilot.last)


def test_a_route_change_that_keeps_the_scope_retranslates_routes_only() -> None:
    """A new timeout on reviews leaves productpage's scope holding the same services: its route table changes and
    nothing else, so every other type is the previous push's object."""
    config = _scoped()
    pilot, registry = _mesh(config)
    pilot.push(config, wait=0)
    before = pilot.last
    reviews = VirtualService(name="reviews", hosts=["reviews"], http=[HTTPRoute(route=[h.to("reviews")], timeout="4s")])
    pilot.push(_swap(config, reviews), wait=0)
    after = pilot.last
    assert before is not None and after is not None
    node = next(p.id for p in registry.proxies if p.labels.get("app") == "productpage")
    old, new = before.snapshots[node], after.snapshots[node]
    assert new.version(rt.ROUTE) != old.version(rt.ROUTE)
    for t in (rt.CLUSTER, rt.ENDPOINT, rt.LISTENER, rt.SECRET):
        assert new.resources(t) is old.resources(t), t
    assert_equals_fresh(pilot, after)
