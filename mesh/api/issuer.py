"""Where gateway certificates come from when neither a file nor the mesh CA should provide them: an ACME server
(Let's Encrypt's protocol).

meshops' own kind (`meshops.dev/v1alpha1 Issuer`), shaped like cert-manager's `Issuer` with an `acme` block, and
referenced the way cert-manager's gateway shim is: a Gateway annotated `cert-manager.io/issuer: <issuer name>`
(an Issuer in the Gateway's namespace) gets the credentialName of each of its TLS servers from that issuer, for the
server's hosts. The local mesh obtains, serves (HTTP-01 through its edge), stores, pushes (SDS) and renews them.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from mesh.api._base import IstioModel, Resource, parse_duration
from mesh.api.edge import MESHOPS
from mesh.api.networking import Gateway
from mesh.errors import PolicyError

ISSUER_ANNOTATION = "cert-manager.io/issuer"  # cert-manager's own: the same Gateway works with it in a cluster


class AcmeIssuerSpec(IstioModel):
    """The ACME account and server. `ca_bundle` is a PEM file trusted for the ACME server's own HTTPS (a private
    server such as pebble or step-ca); the system's trust store when unset."""

    server: str = Field(pattern=r"^https://")  # the directory URL
    email: str | None = None
    ca_bundle: str | None = None
    renew_before: str = "720h"  # 30 days before expiry, as cert-manager renews 90-day certificates
    timeout: str = "90s"  # one order, challenge to certificate
    retry_interval: str = "30s"  # after a failed order; the previous certificate keeps serving meanwhile

    @field_validator("renew_before", "timeout", "retry_interval")
    @classmethod
    def _durations(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError(f"{v!r} must be a positive duration")
        return v


class Issuer(Resource):
    """An ACME issuer for gateway credentials (HTTP-01, answered by the edge on its plain-HTTP listener)."""

    api_version: ClassVar[str] = MESHOPS
    kind: ClassVar[str] = "Issuer"

    acme: AcmeIssuerSpec


def issued_credentials(gateways: list[Gateway], issuers: list[Issuer]) -> dict[str, tuple[Issuer, list[str]]]:
    """credentialName -> (its issuer, the hosts to certify), for every TLS server of a Gateway annotated with
    `cert-manager.io/issuer`. An issuer that does not exist, or a wildcard host (HTTP-01 cannot prove one), is
    refused by name."""
    by_ref = {(i.namespace, i.name): i for i in issuers}
    out: dict[str, tuple[Issuer, list[str]]] = {}
    for gw in gateways:
        ref = gw.annotations.get(ISSUER_ANNOTATION)
        if ref is None:
            continue
        issuer = by_ref.get((gw.namespace, ref))
        if issuer is None:
            raise PolicyError(
                f"Gateway {gw.namespace}/{gw.name} names issuer {ref!r} ({ISSUER_ANNOTATION}), "
                f"but there is no Issuer {gw.namespace}/{ref}",
                hint=f"declare Issuer(name={ref!r}, namespace={gw.namespace!r}, acme=...) or fix the annotation",
            )
        for server in gw.servers:
            if server.tls is None or not server.tls.credential_name:
                continue
            hosts = [h.split("/", 1)[-1] for h in server.hosts]
            wild = [h for h in hosts if "*" in h]
            if wild:
                raise PolicyError(
                    f"Gateway {gw.namespace}/{gw.name} server {server.port.name!r} asks issuer {ref!r} for "
                    f"{', '.join(wild)}: an HTTP-01 challenge cannot prove a wildcard name",
                    hint="list the exact hosts on that server (or provide the credential's files yourself)",
                )
            _, known = out.setdefault(server.tls.credential_name, (issuer, []))
            known.extend(h for h in hosts if h not in known)
    return out
