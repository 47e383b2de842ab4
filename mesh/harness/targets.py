"""What a test drives: a mesh under test, the same interface for every target (local today, kind in CI).

Target-specific knobs (how to wait for propagation, how to reach a pod) live here, never in the tests.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Protocol

from mesh.api.config import MeshConfig
from mesh.api.workloads import spiffe_id
from mesh.dataplane.addresses import allocate_block
from mesh.harness.client import HttpClient
from mesh.runtime import GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT


class MeshUnderTest(Protocol):
    name: str
    config: MeshConfig
    gateway_identity: str  # the SPIFFE id the ingress gateway presents to workloads

    def ingress(self, host: str | None = None) -> HttpClient: ...

    def from_pod(self, pod: str) -> HttpClient: ...

    def plaintext_to(self, pod: str) -> HttpClient: ...

    def apply(self, config: MeshConfig) -> None: ...

    def pods(self, service: str) -> list[str]: ...

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]: ...

    def restarts(self) -> int:
        """How many times any proxy or app restarted (config changes must not cause any)."""
        ...

    def stop(self) -> None: ...


class LocalMeshUnderTest:
    """The local target, in this process: real Envoys and apps, propagation = every proxy ACKed."""

    name = "local"
    gateway_identity = spiffe_id(GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT)

    def __init__(self, config: MeshConfig, state_dir: Path | None = None) -> None:
        from mesh.targets.local import LocalMesh, LocalOptions

        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="meshops-e2e-")
        root = state_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        block = allocate_block()
        self.mesh = LocalMesh(
            config,
            LocalOptions(state_dir=root, ingress_host=block.gateway_ip, ingress_port=8080, loopback_block=block.b),
            progress=lambda m: None,
        )
        self.mesh.start()
        self.config = config

    def ingress(self, host: str | None = None) -> HttpClient:
        return HttpClient(self.mesh.ingress_url, host=host)

    def _pod(self, pod: str):  # type: ignore[no-untyped-def]
        for p in self.mesh.registry.pods:
            if pod in (p.name, p.service):
                return p
        raise KeyError(f"no pod {pod!r}; pods: {[p.name for p in self.mesh.registry.pods]}")

    def from_pod(self, pod: str) -> HttpClient:
        """Requests leave through that pod's sidecar (its HTTP proxy port), as the app's own calls do."""
        return HttpClient("", proxy=f"http://{self._pod(pod).ip}:15001")

    def plaintext_to(self, pod: str) -> HttpClient:
        """A legacy client outside the mesh: plaintext straight to the pod's sidecar inbound port."""
        p = self._pod(pod)
        return HttpClient(f"http://{p.ip}:{p.ports[0].number}")

    def apply(self, config: MeshConfig) -> None:
        self.mesh.apply(config)
        self.config = config

    def pods(self, service: str) -> list[str]:
        return [p.name for p in self.mesh.registry.pods if p.service == service]

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]:
        from mesh.dataplane.envoy import Admin

        return Admin(self._pod(pod).ip).stats(pattern)

    def restarts(self) -> int:
        return sum(int(p["restarts"]) for p in self.mesh.supervisor.status())  # type: ignore[call-overload]

    def stop(self) -> None:
        self.mesh.stop()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
