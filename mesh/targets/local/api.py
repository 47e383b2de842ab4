"""The local control API's wire models: the requests and replies of `mesh status | apply | proxy-status`, the
state file, and the typed config that `mesh apply` sends (objects with their source locations, never YAML)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mesh.analyze.findings import Finding
from mesh.api._base import Resource, SourceLocation
from mesh.api.config import MeshConfig
from mesh.api.edge import Edge
from mesh.api.issuer import Issuer
from mesh.api.networking import DestinationRule, Gateway, VirtualService
from mesh.api.ratelimit import RateLimit
from mesh.api.registry import ServiceEntry, WorkloadEntry
from mesh.api.security import AuthorizationPolicy, PeerAuthentication
from mesh.api.sidecar import Sidecar
from mesh.api.workloads import Service
from mesh.controlplane.ca.acme_status import AcmeCredential
from mesh.dataplane.supervisor import ProcessStatus
from mesh.edge.local import EdgeInfo
from mesh.errors import Reportable
from mesh.observability.layout import Endpoints
from mesh.targets.base import FindingModel, ProxyStatus

KINDS: dict[str, type[Resource]] = {
    c.kind: c
    for c in (
        Gateway,
        VirtualService,
        DestinationRule,
        PeerAuthentication,
        AuthorizationPolicy,
        Edge,
        RateLimit,
        Issuer,
        Sidecar,
    )
}
KINDS.update({c.kind: c for c in (ServiceEntry, WorkloadEntry)})  # the registry entries the local mesh translates


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WireResource(_Model):
    """One policy object: its fields as the typed API names them, and where it was declared."""

    kind: str
    fields: dict[str, Any]
    source: SourceLocation | None = None

    def to_resource(self) -> Resource:
        return KINDS[self.kind].model_validate(self.fields).located(self.source)


class WireConfig(_Model):
    """A MeshConfig on the wire. Source locations travel with each object, so findings computed on the far side
    still point at the Python line (or YAML document) that declared it."""

    services: list[dict[str, Any]] = Field(default_factory=list)
    resources: list[WireResource] = Field(default_factory=list)

    @classmethod
    def of(cls, config: MeshConfig) -> WireConfig:
        return cls(
            services=[s.model_dump(mode="json", exclude_unset=True) for s in config.services],
            resources=[
                WireResource(kind=r.kind, fields=r.model_dump(mode="json", exclude_unset=True), source=r.source)
                for r in config.resources
            ],
        )

    def to_config(self) -> MeshConfig:
        return MeshConfig(
            services=[Service.model_validate(s) for s in self.services],
            resources=[r.to_resource() for r in self.resources],
        )


def finding_model(f: Reportable) -> FindingModel:
    return FindingModel.model_validate(f.to_dict())


def finding_of(m: FindingModel) -> Finding:
    source = None
    if m.source:
        file, _, line = m.source.rpartition(":")
        source = SourceLocation(file=file, line=int(line)) if line.isdigit() else None
    return Finding(code=m.code, message=m.message, resource=m.resource, path=m.path, source=source)


class ApplyRequest(_Model):
    config: WireConfig
    merge: bool = False  # kubectl-apply semantics: the config's objects replace their namesakes, the rest stay
    dry_run: bool = False
    analyze: bool = True
    wait: float = 10.0
    base_revision: int | None = None  # set: refused unless the mesh still runs this revision (a precondition)


class ErrorReply(_Model):
    """Every non-200 answer: which error of the tree it was, so the client raises the same one."""

    kind: Literal[
        "auth",
        "analysis",
        "rejected",
        "timed-out",
        "stale",
        "policy",
        "mesh",
        "workload",
        "target",
        "internal",
        "not-found",
        "bad-request",
    ]
    error: str = ""
    hint: str | None = None
    findings: list[FindingModel] = Field(default_factory=list)
    rejections: dict[str, str] = Field(default_factory=dict)


class ProxyInfo(_Model):
    name: str
    id: str
    kind: str
    ip: str
    admin: str


class PodInfo(_Model):
    name: str
    namespace: str
    service: str
    version: str
    ip: str
    app: str
    port: int  # the sidecar's inbound port (the service port): where a plaintext client outside the mesh connects
    netns: str | None = None  # its network namespace (--interception iptables)


class MeshDescription(_Model):
    """What `mesh status` shows: the running mesh, its proxies, pods and processes."""

    pid: int
    ingress: str
    ingress_https: str | None = None
    ca: str
    xds: str | None = None
    revision: int
    started_at: float
    block: int | None = None
    interception: str = "proxy"  # proxy (HTTP_PROXY) or iptables (transparent capture, a namespace per pod)
    proxies: list[ProxyInfo] = Field(default_factory=list)
    pods: list[PodInfo] = Field(default_factory=list)
    processes: list[ProcessStatus] = Field(default_factory=list)
    observability: Endpoints | None = None  # where the telemetry stack listens (`mesh up --observability`)
    edge: EdgeInfo | None = None  # the HAProxy edge and its backends (`mesh up --edge haproxy`)
    acme: list[AcmeCredential] = Field(default_factory=list)  # ACME credentials: last renewal, error if any


class StateFile(MeshDescription):
    """STATE_DIR/state.json: where the running mesh's control API is and the token to use it (file mode 0600)."""

    api: str
    token: str
    pid_start: int = 0  # the mesh process's start time (/proc/PID/stat): a reused pid is never taken for it
    env: str = ""
    policies: str = ""
    state_dir: str = ""


class ProxyStatusReply(_Model):
    proxies: list[ProxyStatus]
