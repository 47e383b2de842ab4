"""What a test drives: a mesh under test, the same interface on every target (local here, kind in CI).

`MeshUnderTest` adapts any Target: its data path for traffic, `apply` for policy changes, `down` at the end.
Target-specific knobs (how to wait for propagation, how to reach a pod) live in the targets, never in the tests.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from mesh.api.config import MeshConfig
from mesh.dataplane.addresses import allocate_block
from mesh.targets.base import Client, DataPath, Target
from mesh.targets.local import LocalMesh, LocalOptions, LocalTarget


class MeshUnderTest:
    def __init__(self, target: Target, config: MeshConfig, *, owned: bool = False) -> None:
        self.target = target
        self.owned = owned  # stop() brings down only a mesh this run brought up (never a shared cluster)
        self.name = target.name
        self.config = config
        self._path: DataPath = target.data_path()
        self.gateway_identity = self._path.gateway_identity  # the SPIFFE id the ingress gateway presents

    def ingress(self, host: str | None = None) -> Client:
        return self._path.ingress(host)

    def from_pod(self, pod: str) -> Client:
        return self._path.from_pod(pod)

    def plaintext_to(self, pod: str) -> Client:
        return self._path.plaintext_to(pod)

    def pods(self, service: str) -> list[str]:
        return self._path.pods(service)

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]:
        return self._path.proxy_stats(pod, pattern)

    def restarts(self) -> int:
        """How many times any proxy or app restarted (config changes must not cause any)."""
        return self._path.restarts()

    def apply(self, config: MeshConfig) -> None:
        """Returns once every proxy serves `config` (the target waits for propagation)."""
        self.target.apply(config)
        self.config = config

    def stop(self) -> None:
        if self.owned:
            self.target.down()


class LocalMeshUnderTest(MeshUnderTest):
    """The local target in this process (its control API on loopback), on a loopback block of its own, so a run
    never disturbs a mesh the user has up. `.mesh` is the LocalMesh itself, for tests of its machinery."""

    def __init__(
        self, config: MeshConfig, state_dir: Path | None = None, interception: str = "proxy", **local: Any
    ) -> None:
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="meshops-e2e-")
        root = state_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        block = allocate_block()
        options = LocalOptions(
            state_dir=root,
            ingress_host=block.gateway_ip,
            ingress_port=8080,
            loopback_block=block.b,
            interception=interception,  # pydantic validates the choice
            **local,  # further LocalOptions fields (dns_proxy, outbound_traffic_policy, ...)
        )
        target = LocalTarget(options, detach=False)
        target.up(config, progress=lambda m: None)
        try:
            super().__init__(target, config, owned=True)
        except BaseException:
            target.down()
            raise

    @property
    def mesh(self) -> LocalMesh:
        target = self.target
        assert isinstance(target, LocalTarget) and target.mesh is not None, "the local mesh is not running"
        return target.mesh

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    self._tmp.cleanup()
