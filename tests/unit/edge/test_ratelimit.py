"""RateLimit -> Envoy's local_ratelimit locally and an Istio EnvoyFilter for Kubernetes, from one translation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mesh.api import RateLimit, TokenBucket
from mesh.api.config import MeshConfig
from mesh.api.envoyfilter import EnvoyFilter
from mesh.api.networking import WorkloadSelector
from mesh.api.ratelimit import LOCAL_RATELIMIT_FILTER as FILTER
from mesh.compile.ratelimit import envoy_filter
from mesh.compile.render import render_istio
from mesh.controlplane.translate.ratelimit import applicable, rate_limit_filters
from mesh.runtime import Proxy

BUCKET = TokenBucket(max_tokens=10, tokens_per_fill=5, fill_interval="2s")


def _proxy(namespace: str, **labels: str) -> Proxy:
    return Proxy("sidecar", "10.0.0.1", "p", namespace, labels, "sa", None, {})


def test_scoping_follows_envoyfilter_namespace_and_labels() -> None:
    mine = RateLimit(
        name="a",
        namespace="shop",
        workload_selector=WorkloadSelector(match_labels={"app": "cart"}),
        token_bucket=BUCKET,
    )
    everyone = RateLimit(name="all", namespace="istio-system", token_bucket=BUCKET)
    config = MeshConfig(resources=[mine, everyone])
    assert applicable(config, _proxy("shop", app="cart")) == mine  # the namespace's own wins over the root's
    assert applicable(config, _proxy("shop", app="web")) == everyone
    assert applicable(MeshConfig(resources=[mine]), _proxy("other", app="cart")) is None
    assert rate_limit_filters(MeshConfig(), _proxy("shop")) == []
    (f,) = rate_limit_filters(config, _proxy("shop", app="cart"))
    assert f.name == FILTER


def test_renders_to_the_envoyfilter_istio_users_write() -> None:
    limit = RateLimit(
        name="cart",
        namespace="shop",
        workload_selector=WorkloadSelector(match_labels={"app": "cart"}),
        token_bucket=BUCKET,
    )
    ef = envoy_filter(limit)
    again = EnvoyFilter.model_validate(ef.model_dump(by_alias=True, exclude_none=True))  # the typed model accepts it
    assert again.config_patches == ef.config_patches and again.workload_selector == ef.workload_selector
    assert [p.match.context for p in ef.config_patches if p.match] == ["SIDECAR_INBOUND", "GATEWAY"]
    patch = ef.config_patches[0]
    assert patch.apply_to == "HTTP_FILTER" and patch.patch is not None and patch.patch.operation == "INSERT_BEFORE"
    value = patch.patch.value or {}
    bucket = value["typed_config"]["token_bucket"]
    assert (bucket["max_tokens"], bucket["tokens_per_fill"], bucket["fill_interval"]) == (10, 5, "2s")
    manifests = render_istio(MeshConfig(resources=[limit]))
    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [("EnvoyFilter", "ratelimit-cart")]


def test_refill_larger_than_the_bucket_is_refused() -> None:
    with pytest.raises(ValidationError, match="exceeds max_tokens"):
        RateLimit(name="x", token_bucket=TokenBucket(max_tokens=1, tokens_per_fill=2))
