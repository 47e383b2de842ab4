"""Workloads: the services the mesh routes to, and how each version runs on every target.

A `Service` is what Kubernetes calls a Service plus its Deployments (one per `Version`). Targets turn
these into local processes (the `command`) or Kubernetes objects (the `image`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mesh.api._base import _DNS_LABEL, _DNS_SUBDOMAIN, Int, IstioModel, SourceLocation, _caller_location

CLUSTER_DOMAIN = "cluster.local"

AppProtocol = Literal["http", "http2", "grpc", "grpc-web", "tcp", "tls", "https", "mongo", "mysql", "redis"]


class ServicePort(IstioModel):
    number: Int = Field(ge=1, le=65535)
    name: str = "http"
    # what the port carries; unset: Istio's choice from appProtocol and the name's prefix (`mesh.istio.protocol`)
    protocol: AppProtocol | None = None
    app_protocol: str | None = None  # Kubernetes' `appProtocol` (`tcp`, `mysql`, `kubernetes.io/h2c`...)
    target_port: Int | None = Field(default=None, ge=1, le=65535)


class Version(IstioModel):
    """One Deployment of a service. Its pods carry `app=<service>`, `version=<name>` plus `labels`."""

    name: str
    replicas: Int = Field(default=1, ge=0, le=64)
    labels: dict[str, str] = {}
    command: list[str] = []
    image: str | None = None
    env: dict[str, str] = {}
    deployment: str | None = None  # the Deployment's name, when it is not `<service>-<version>`

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, v: str | None) -> str | None:
        if v is not None and (not _DNS_SUBDOMAIN.match(v) or len(v) > 253):
            raise ValueError(f"{v!r} is not a valid Deployment name")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a valid version name: use lowercase letters, digits and '-'")
        return v


class Service(IstioModel):
    """A mesh service: its ports, identity (service account) and versions."""

    name: str
    namespace: str = "default"
    ports: list[ServicePort] = Field(default_factory=lambda: [ServicePort(number=9080)], min_length=1)
    service_account: str | None = None
    versions: list[Version] = Field(min_length=1)
    labels: dict[str, str] = {}  # the Kubernetes Service's labels besides `app`
    # no VIP (Kubernetes `clusterIP: None`): the name resolves to the pods themselves and each pod is addressable as
    # `<pod>.<service>.<namespace>.svc.cluster.local`, as for a StatefulSet; Istio routes it by original destination
    headless: bool = False

    _source: SourceLocation | None = PrivateAttr(default=None)

    def model_post_init(self, __context: object) -> None:
        self._source = _caller_location()

    @field_validator("name", "namespace")
    @classmethod
    def _label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError(f"{v!r} is not a valid DNS label: use lowercase letters, digits and '-'")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Service:
        versions = [v.name for v in self.versions]
        ports = [str(p.number) for p in self.ports]
        for what, names in (("version", versions), ("port", ports)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"duplicate {what} {dup!r} in service {self.name!r}")
        return self

    @property
    def source(self) -> SourceLocation | None:
        return self._source

    def located(self, source: SourceLocation | None) -> Service:
        self._source = source
        return self

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    @property
    def identity(self) -> str:
        """The SPIFFE ID its pods present under mTLS."""
        return spiffe_id(self.namespace, self.service_account or self.name)

    def pod_labels(self, version: Version) -> dict[str, str]:
        return {"app": self.name, "version": version.name, **version.labels}

    def deployment_name(self, version: Version) -> str:
        return version.deployment or f"{self.name}-{version.name}"

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.number == number), None)


def spiffe_id(namespace: str, service_account: str, trust_domain: str = CLUSTER_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


_SHORT = re.compile(r"^[a-z0-9-]+$")


def resolve_host(host: str, namespace: str) -> str:
    """Istio's short-name rule: `reviews` in namespace `default` is `reviews.default.svc.cluster.local`."""
    if "." not in host and _SHORT.match(host):
        return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"
    return host
