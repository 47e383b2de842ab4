from __future__ import annotations

import itertools

import pytest

from mesh.api import MeshConfig
from mesh.compile import build_policies
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.ca.credentials import CredentialStore
from mesh.controlplane.pilot import resolve_secrets
from mesh.controlplane.translate import PushContext, build_snapshot
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.runtime import Pod, Proxy, gateway_proxy, pods_for, sidecar_for


class World:
    """A translated mesh without any process: push context, proxies, snapshots."""

    def __init__(self, config: MeshConfig) -> None:
        counter = itertools.count(1)

        def ips() -> tuple[str, str]:
            k = next(counter)
            return f"127.99.{k}.1", f"127.99.{k}.2"

        self.config = config
        self.pods: list[Pod] = [p for s in config.services for p in pods_for(s, ips)]
        self.push = PushContext(config, self.pods)
        self.ca = CertificateAuthority()
        self.credentials = CredentialStore(self.ca)
        self.gateway = gateway_proxy("127.99.0.1", {80: ("127.0.0.1", 8080)})

    def sidecar(self, pod_name: str) -> Proxy:
        return sidecar_for(next(p for p in self.pods if p.name == pod_name))

    def snapshot(self, proxy: Proxy) -> Snapshot:
        return build_snapshot(self.push, proxy, resolve_secrets(self.ca, self.credentials, self.push, proxy))


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def world() -> World:
    return World(build_policies("e2e"))
