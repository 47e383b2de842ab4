"""An in-memory Target for unit tests: it serves whatever config was applied, with a seeded RNG.

Routing is deliberately simple (a VirtualService's first rule whose exact header/prefix matches fit, weights drawn
from the seeded RNG); versions listed in `broken` answer 500. It implements the Target protocol only, so code under
test cannot reach into a real target's internals.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import requests

from mesh.api.config import MeshConfig
from mesh.api.networking import VirtualService
from mesh.compile.diff import diff_configs
from mesh.errors import TargetError
from mesh.targets.base import ApplyResult, ChangeModel, Client, DataPath, Progress, ProxyStatus, TargetStatus
from mesh.targets.traffic import Reply


@dataclass
class FakeClient:
    mesh: FakeTarget
    host: str | None = None
    caller: str = ""

    def get(self, path: str, headers: dict[str, str] | None = None, *, host: str | None = None) -> Reply:
        return self.request("GET", path, headers, host=host)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, host: str | None = None
    ) -> Reply:
        if path.startswith("http://"):
            hostport, _, rest = path.removeprefix("http://").partition("/")
            target = hostport.split(":")[0]
            if (self.caller, target) in self.mesh.denied:
                return Reply(403, {}, None, "RBAC: access denied", 0.001)
            return self.mesh.serve(target, "/" + rest, headers or {})
        return self.mesh.serve(host or self.host or "", path, headers or {})


@dataclass
class FakeDataPath:
    mesh: FakeTarget
    gateway_identity: str = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"

    def ingress(self, host: str | None = None) -> Client:
        return FakeClient(self.mesh, host)

    def from_pod(self, pod: str) -> Client:
        return FakeClient(self.mesh, caller=pod.split("-")[0])

    def plaintext_to(self, pod: str) -> Client:
        return _Refused()

    def pods(self, service: str) -> list[str]:
        return [f"{service}-v1-0"]

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]:
        return {}

    def restarts(self) -> int:
        return 0


class _Refused:
    def get(self, path: str, headers: dict[str, str] | None = None, *, host: str | None = None) -> Reply:
        raise requests.ConnectionError("connection reset by peer")

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, host: str | None = None
    ) -> Reply:
        raise requests.ConnectionError("connection reset by peer")


@dataclass
class FakeTarget:
    name: str = "fake"
    config: MeshConfig = field(default_factory=MeshConfig)
    revision: int = 0
    broken: set[str] = field(default_factory=set)  # versions that answer 500
    denied: set[tuple[str, str]] = field(default_factory=lambda: {("reviews", "details"), ("productpage", "ratings")})
    unreachable: bool = False
    applies: list[MeshConfig] = field(default_factory=list)
    fail_next_apply: BaseException | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def up(self, config: MeshConfig, progress: Progress | None = None) -> TargetStatus:
        self.config = config
        return self.status()

    def apply(
        self, config: MeshConfig, *, dry_run: bool = False, prune: bool = True, wait: float = 10.0
    ) -> ApplyResult:
        if self.unreachable:
            raise TargetError("fake target unreachable")
        if self.fail_next_apply is not None:
            err, self.fail_next_apply = self.fail_next_apply, None
            raise err
        diff = [ChangeModel(op=c.op, ref=c.ref, patch=c.patch) for c in diff_configs(self.config, config)]
        if not dry_run and diff:
            self.config = copy.deepcopy(config)
            self.revision += 1
            self.applies.append(self.config)
        return ApplyResult(target=self.name, revision=str(self.revision), dry_run=dry_run, diff=diff)

    def live_config(self) -> MeshConfig:
        if self.unreachable:
            raise TargetError("fake target unreachable")
        return copy.deepcopy(self.config)

    def status(self) -> TargetStatus:
        return TargetStatus(target=self.name, running=not self.unreachable, revision=str(self.revision))

    def proxy_status(self) -> list[ProxyStatus]:
        return []

    def down(self) -> None:
        self.config = MeshConfig()

    def data_path(self) -> DataPath:
        return FakeDataPath(self)

    def serve(self, host: str, path: str, headers: dict[str, str]) -> Reply:
        vs = self._virtual_service(host)
        if vs is None:
            return Reply(404, {}, None, "no route", 0.001)
        for rule in vs.http:
            if rule.match and not any(self._matches(m, path, headers) for m in rule.match):
                continue
            if rule.fault and rule.fault.abort and rule.fault.abort.http_status:
                pct = rule.fault.abort.percentage.value if rule.fault.abort.percentage else 100.0
                if self.rng.random() * 100 < pct:
                    return Reply(rule.fault.abort.http_status, {}, None, "fault filter abort", 0.001)
            weights = [float(d.weight if d.weight is not None else 100) for d in rule.route]
            dest = self.rng.choices(rule.route, weights)[0]
            version = dest.destination.subset or "v1"
            if version in self.broken:
                return Reply(500, {}, {"version": version, "error": "broken"}, "broken", 0.001)
            body = {"service": dest.destination.host, "version": version, "calls": []}
            return Reply(200, {}, body, str(body), 0.001)
        return Reply(404, {}, None, "no rule", 0.001)

    def _virtual_service(self, host: str) -> VirtualService | None:
        return next((v for v in self.config.virtual_services if host in v.hosts), None)

    @staticmethod
    def _matches(m: object, path: str, headers: dict[str, str]) -> bool:
        uri = getattr(m, "uri", None)
        if uri is not None and not (path == uri.exact or (uri.prefix is not None and path.startswith(uri.prefix))):
            return False
        for name, sm in getattr(m, "headers", {}).items():
            if headers.get(name) != (sm.exact if sm.exact is not None else sm.prefix):
                return False
        return True
