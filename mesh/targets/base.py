"""The one Target protocol: what every place a mesh runs (local Envoys, Kubernetes + Istio) offers its callers.

The CLI, the GitOps reconciler and the pytest harness speak only this protocol; each target implements it in its
own package (`mesh.targets.local`, `mesh.targets.kubernetes`). Results are typed models, so what crosses a process
boundary (control API, `-o json`, the reconciler's state) is the same shape everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mesh.api.config import MeshConfig
from mesh.targets.traffic import Reply

Progress = Callable[[str], None]

SyncState = Literal["SYNCED", "STALE", "NACK", "NOT SENT", "NOT_CONNECTED", "DISCONNECTED"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChangeModel(_Model):
    """One object the apply adds (+), removes (-) or changes (~), with a unified diff for changes."""

    op: Literal["+", "-", "~"]
    ref: str  # "VirtualService default/reviews"
    patch: str = ""


class FindingModel(_Model):
    """An analysis finding as it crosses a process boundary (see mesh.analyze.findings.Finding)."""

    code: str
    name: str = ""
    level: str
    message: str
    resource: str = ""  # "VirtualService default/reviews"
    path: str = ""  # "spec.http[0].route[1].destination.subset"
    source: str | None = None  # file:line of the object that caused it (the Python policy or the YAML)
    documentation: str = ""


class ApplyResult(_Model):
    """What an apply did. `revision` identifies the config now serving (a counter locally, a digest elsewhere)."""

    target: str
    revision: str
    dry_run: bool = False
    diff: list[ChangeModel] = Field(default_factory=list)
    findings: list[FindingModel] = Field(default_factory=list)  # warnings (errors raise AnalysisFailed)
    proxies: dict[str, SyncState] = Field(default_factory=dict)  # proxy -> state after the push
    changed_proxies: list[str] = Field(default_factory=list)  # the proxies whose config this push changed
    translate_ms: float = 0.0
    sync_ms: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.diff)


class ProxyStatus(_Model):
    """One proxy's sync state, like a row of `istioctl proxy-status`."""

    proxy: str
    id: str
    kind: str  # sidecar | gateway
    state: SyncState
    errors: dict[str, str] = Field(default_factory=dict)  # xDS type -> Envoy's NACK text
    versions: dict[str, str] = Field(default_factory=dict)  # CDS/LDS/EDS/RDS/SDS -> ACKed version (short)

    def __getitem__(self, field: str) -> Any:
        """`status["state"]`: callers written against the dict this used to be keep working."""
        return getattr(self, field)


class TargetStatus(_Model):
    """Whether the target runs, where to send traffic, and which config revision serves."""

    target: str
    env: str = ""
    running: bool
    revision: str = ""
    ingress_url: str | None = None
    ingress_https_url: str | None = None
    detail: str = ""  # one line for humans: why not running, what to do


class Client(Protocol):
    """Sends HTTP requests from one vantage point (the ingress, a pod's sidecar, a client outside the mesh)."""

    def get(self, path: str, headers: dict[str, str] | None = None, *, host: str | None = None) -> Reply: ...

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, host: str | None = None
    ) -> Reply: ...


class DataPath(Protocol):
    """How a test or a verification reaches the running mesh's data path, the same way on every target."""

    gateway_identity: str  # the SPIFFE id the ingress gateway presents to workloads

    def ingress(self, host: str | None = None) -> Client: ...

    def from_pod(self, pod: str) -> Client:
        """Requests that leave through that pod's sidecar, as the app's own calls do."""
        ...

    def plaintext_to(self, pod: str) -> Client:
        """A legacy client outside the mesh, plaintext straight to the pod's inbound port."""
        ...

    def pods(self, service: str) -> list[str]: ...

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]: ...

    def restarts(self) -> int:
        """How many times any proxy or app restarted (config changes must not cause any)."""
        ...


@runtime_checkable
class Target(Protocol):
    """A place the compiled config runs. Implementations: LocalTarget, KubernetesTarget."""

    name: str

    def up(self, config: MeshConfig, progress: Progress | None = None) -> TargetStatus:
        """Start (or create) the mesh with these workloads and policies; return once traffic is served."""
        ...

    def apply(
        self, config: MeshConfig, *, dry_run: bool = False, prune: bool = True, wait: float = 10.0
    ) -> ApplyResult:
        """Analyze, diff against what is live, and make `config`'s policies live on every proxy (all or nothing).

        Raises AnalysisFailed (errors found: nothing applied), PushRejected (the data plane refused it: the last
        good config still serves), TargetError (unreachable or timed out: the last good config still serves)."""
        ...

    def live_config(self) -> MeshConfig:
        """The policies (and workloads) that serve now: what a diff or a drift check compares git against."""
        ...

    def status(self) -> TargetStatus: ...

    def proxy_status(self) -> list[ProxyStatus]: ...

    def down(self) -> None:
        """Stop everything this target started; a no-op when nothing runs."""
        ...

    def data_path(self) -> DataPath:
        """Clients into the running mesh (ingress, from a pod, plaintext), for tests and verification."""
        ...
