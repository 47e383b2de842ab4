"""Typed probes: what a verification sends through the data path and what it expects back.

Derived checks (mesh.verify.derive) and the probes a repository declares next to its policies (`probes(env)` in a
policies module, or `probes.yaml` in a YAML directory) are the same objects, so both run and report alike.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mesh.verify.stats import DEFAULT_DEVIATION


class _Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    via: str = "ingress"  # "ingress", or "pod:<service>": sent through that service's sidecar


class StatusProbe(_Probe):
    """A request answers with this status (e.g. each ingress route answers 200)."""

    kind: Literal["status"] = "status"
    host: str | None = None
    path: str = "/"
    headers: dict[str, str] = {}
    expect: int = 200


class SplitProbe(_Probe):
    """Destinations (the answering app's `version`) follow these weights: a sequential test, both error rates stated."""

    kind: Literal["split"] = "split"
    host: str | None = None
    path: str = "/"
    headers: dict[str, str] = {}
    weights: dict[str, float]
    deviation: float = DEFAULT_DEVIATION
    call: str | None = None  # read the version of this downstream call (e.g. productpage's call to "reviews")


class FractionProbe(_Probe):
    """The fraction of requests answered with `status` (a fault's abort percentage) is `fraction`."""

    kind: Literal["fraction"] = "fraction"
    host: str | None = None
    path: str = "/"
    headers: dict[str, str] = {}
    status: int
    fraction: float
    deviation: float = DEFAULT_DEVIATION


class PlaintextRefusedProbe(_Probe):
    """STRICT mTLS holds: a plaintext client outside the mesh gets no answer from this service's pods."""

    kind: Literal["plaintext-refused"] = "plaintext-refused"
    service: str


class DeniedProbe(_Probe):
    """An AuthorizationPolicy denies this caller: a request from its sidecar answers 403."""

    kind: Literal["denied"] = "denied"
    caller: str  # the calling service
    url: str  # http://ratings:9080/


Probe = Annotated[
    StatusProbe | SplitProbe | FractionProbe | PlaintextRefusedProbe | DeniedProbe, Field(discriminator="kind")
]


class ProbeList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probes: list[Probe] = []
