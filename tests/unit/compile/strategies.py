"""Hypothesis strategies derived from the typed models themselves, so new fields are covered for free."""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from hypothesis import reject
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mesh.api import (
    Abort,
    Delay,
    EnvoyConfigObjectMatch,
    EnvoyConfigObjectPatch,
    HTTPFaultInjection,
    HTTPRoute,
    Patch,
    Percent,
    Resource,
    StringMatch,
)

DURATION_FIELDS = {
    "timeout",
    "per_try_timeout",
    "fixed_delay",
    "max_age",
    "connect_timeout",
    "idle_timeout",
    "interval",
    "base_ejection_time",
    "backoff",
    "ttl",
    "duration",
    "time",
    "max_connection_duration",
    "reporting_interval",
    "warmup_duration_secs",
}
durations = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 999), st.sampled_from(["ms", "s", "m", "h"]))
names = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)
text = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8)

OVERRIDES: dict[type, st.SearchStrategy[Any]] = {
    StringMatch: st.one_of(
        st.builds(StringMatch, exact=text),
        st.builds(StringMatch, prefix=text.map(lambda t: "/" + t)),
        st.builds(StringMatch, regex=st.sampled_from(["/a.*", "v[0-9]+", "^x$"])),
    ),
    Abort: st.one_of(
        st.builds(Abort, http_status=st.integers(400, 599)),
        st.builds(Abort, grpc_status=st.sampled_from(["UNAVAILABLE"])),
        st.builds(Abort, http2_error=st.sampled_from(["REFUSED_STREAM"])),
    ),
    Delay: st.builds(
        lambda d, p: Delay(fixed_delay=d, percentage=p),
        durations,
        st.none() | st.integers(0, 100).map(lambda v: Percent(value=float(v))),
    ),
    # patch values are Envoy messages: a few real ones, checked against Envoy's protos on the way in
    EnvoyConfigObjectPatch: st.sampled_from(
        [
            EnvoyConfigObjectPatch(
                apply_to="CLUSTER",
                match=EnvoyConfigObjectMatch(context="SIDECAR_OUTBOUND"),
                patch=Patch(operation="MERGE", value={"connect_timeout": "2s", "lb_policy": "LEAST_REQUEST"}),
            ),
            EnvoyConfigObjectPatch(
                apply_to="HTTP_FILTER",
                patch=Patch(
                    operation="INSERT_BEFORE",
                    value={"name": "envoy.filters.http.buffer"},
                    filter_class="AUTHZ",
                ),
            ),
            EnvoyConfigObjectPatch(apply_to="HTTP_ROUTE", patch=Patch(operation="REMOVE")),
        ]
    ),
}


def _number(bound: object) -> float:
    """annotated_types types a bound only as comparable; every bound in our API is a number."""
    assert isinstance(bound, int | float), bound
    return bound


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    lo: float | None = None
    hi: float | None = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            lo = _number(m.ge)
        if isinstance(m, annotated_types.Le):
            hi = _number(m.le)
    return lo, hi


def for_type(tp: Any, name: str, metadata: list[Any]) -> st.SearchStrategy[Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return st.none() | for_type(inner[0], name, metadata)
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin is list:
        (inner,) = get_args(tp)
        min_size = next((m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)), 0)
        return st.lists(for_type(inner, name, []), min_size=min_size, max_size=2)
    if origin is dict:
        k, v = get_args(tp)
        keys = st.integers(1, 65535) if k is int else names
        return st.dictionaries(keys, for_type(v, name, []), max_size=2)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model(tp)
    if tp is str:
        if name in DURATION_FIELDS:
            return durations
        return names
    if tp is bool:
        return st.booleans()
    if tp is int:
        lo, hi = _bounds(metadata)
        return st.integers(int(lo) if lo is not None else 0, int(hi) if hi is not None else 10_000)
    if tp is float:
        lo, hi = _bounds(metadata)
        return st.floats(lo or 0.0, hi or 100.0, allow_nan=False).map(lambda f: round(f, 4))
    raise NotImplementedError(f"no strategy for {tp!r} ({name})")


@functools.cache
def _hints(cls: type[BaseModel]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@st.composite
def _valid(draw: st.DrawFn, cls: type[BaseModel]) -> BaseModel:
    hints = _hints(cls)
    kwargs = {}
    for fname, field in cls.model_fields.items():
        if fname in ("labels", "annotations") and issubclass(cls, Resource):
            continue
        # an optional field is left out half the time, as authors write policies (passing the default explicitly
        # made validators such as PeerAuthentication's "portLevelMtls is empty" reject most draws: ~80x slower)
        if not field.is_required() and draw(st.booleans()):
            continue
        kwargs[fname] = draw(for_type(hints[fname], fname, list(field.metadata)))
    try:
        return cls(**kwargs)
    except ValidationError:
        reject()


def _route_xor_redirect(r: BaseModel) -> bool:
    return isinstance(r, HTTPRoute) and bool(r.route) != (r.redirect is not None)


def _delay_or_abort(f: BaseModel) -> bool:
    return isinstance(f, HTTPFaultInjection) and (f.delay is not None or f.abort is not None)


def model(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    if cls in OVERRIDES:
        return OVERRIDES[cls]
    if cls is HTTPRoute:
        # a rule has a route or a redirect, never both
        return _valid(cls).filter(_route_xor_redirect)
    if cls is HTTPFaultInjection:
        return _valid(cls).filter(_delay_or_abort)
    return _valid(cls)
