"""Shared model machinery: Istio's camelCase wire names, strict fields, source locations."""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, Strict, field_validator

_MESH_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def istio_name(field: str) -> str:
    """`consecutive_5xx_errors` -> `consecutive5xxErrors`, `from_` -> `from` (pydantic's to_camel
    turns `5xx` into `5Xx`, which is not Istio's spelling)."""
    parts = field.rstrip("_").split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


class IstioModel(BaseModel):
    """Base for every spec object: unknown fields are errors, wire names are Istio's."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=istio_name,
        validate_assignment=True,
        use_enum_values=True,
    )

    def to_istio(self) -> dict[str, Any]:
        """The Istio wire form: camelCase keys; unset fields and empty collections left out.

        A sub-object set to no fields stays as `{}`: in Istio `outlierDetection: {}` turns the feature on.
        """
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = _wire(getattr(self, name))
            if value is None or (
                isinstance(value, list | dict) and not value and not isinstance(getattr(self, name), BaseModel)
            ):
                continue
            out[field.alias or name] = value
        return out


def _wire(value: Any) -> Any:
    if isinstance(value, IstioModel):
        return value.to_istio()
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SourceLocation(BaseModel):
    """Where an object was declared: a Python line, or a YAML document."""

    model_config = ConfigDict(frozen=True)
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def _caller_location() -> SourceLocation | None:
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if (
            not filename.startswith((_MESH_PKG_DIR, "<"))
            and "site-packages" not in filename
            and "pydantic" not in filename
        ):
            return SourceLocation(file=os.path.relpath(filename), line=frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None


class Resource(IstioModel):
    """A top-level Istio object. Metadata lives beside the spec fields so policies read naturally."""

    api_version: ClassVar[str]
    kind: ClassVar[str]
    _metadata_fields: ClassVar[tuple[str, ...]] = ("name", "namespace", "labels", "annotations")
    # spec keys that clash with metadata names: wire key -> field name (WorkloadEntry's spec.labels)
    spec_renames: ClassVar[dict[str, str]] = {}

    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    _source: SourceLocation | None = PrivateAttr(default=None)

    def model_post_init(self, __context: Any) -> None:
        if self._source is None:
            self._source = _caller_location()

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _DNS_SUBDOMAIN.match(v) or len(v) > 253:
            raise ValueError(
                f"{v!r} is not a valid Kubernetes name: use lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit"
            )
        return v

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError(f"{v!r} is not a valid namespace: use lowercase letters, digits and '-'")
        return v

    @property
    def source(self) -> SourceLocation | None:
        return self._source

    def located(self, source: SourceLocation | None) -> Resource:
        self._source = source
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        """`VirtualService default/reviews`: how findings and errors name this object."""
        return f"{self.kind} {self.namespace}/{self.name}"

    def spec(self) -> dict[str, Any]:
        wire = self.to_istio()
        for f in self._metadata_fields:
            wire.pop(istio_name(f), None)
        for key, field in self.spec_renames.items():
            if istio_name(field) in wire:
                wire[key] = wire.pop(istio_name(field))
        return wire

    def to_manifest(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            metadata["labels"] = dict(sorted(self.labels.items()))
        if self.annotations:
            metadata["annotations"] = dict(sorted(self.annotations.items()))
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata, "spec": self.spec()}


DURATION_RE = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms|us|µs|ns))+$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float:
    """Istio/Go duration text (`1.5s`, `100ms`, `1m30s`) -> seconds."""
    if not DURATION_RE.match(text):
        raise ValueError(f"{text!r} is not a duration: write it like '2s', '250ms' or '1m30s'")
    total = 0.0
    for number, _frac, unit in re.findall(r"(\d+(\.\d+)?)(h|ms|m|s|us|µs|ns)", text):
        total += float(number) * _UNIT_SECONDS[unit]
    return total


# google.protobuf.Duration's range: Envoy rejects (NACKs) anything longer, so we refuse it before a push.
MAX_DURATION_SECONDS = 315_576_000_000


def check_duration(v: str | None) -> str | None:
    if v is not None and parse_duration(v) > MAX_DURATION_SECONDS:
        raise ValueError(f"{v!r} is longer than the longest duration Envoy accepts ({MAX_DURATION_SECONDS}s)")
    return v


# Numbers as Istio's protobuf JSON reads them: `true` is not 1 and `"3"` is not 3; int32 fields stay int32.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1

_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_WILDCARD_LABEL = re.compile(rf"^(\*|(\*|\*-)?{_LABEL})$")
_DNS1123_LABEL = re.compile(rf"^{_LABEL}$")


def check_host(host: str) -> str:
    """Istio's ValidateWildcardDomain: DNS-1123 labels (ASCII), a wildcard only in the first label."""
    if not host or len(host) > 255:
        raise ValueError(f"host {host!r} must be 1 to 255 characters")
    if not host.isascii():
        raise ValueError(f"host {host!r} is not ASCII: write internationalised names in their xn-- (punycode) form")
    first, _, rest = host.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL.match(first):
        raise ValueError(f"host {host!r} is not a valid domain name (label {first!r})")
    labels = rest.split(".") if rest else []
    for i, label in enumerate(labels):
        if label == "" and i == len(labels) - 1:
            continue  # a trailing dot (FQDN) is allowed
        if len(label) > 63 or not _DNS1123_LABEL.match(label):
            raise ValueError(f"host {host!r} is not a valid domain name (label {label!r})")
    return host


Host = Annotated[str, AfterValidator(check_host)]
