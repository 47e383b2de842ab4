"""Property: render(import(render(x))) == render(x) for every kind and every supported field."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.api import (
    AuthorizationPolicy,
    DestinationRule,
    EnvoyFilter,
    Gateway,
    MeshConfig,
    PeerAuthentication,
    RequestAuthentication,
    Resource,
    ServiceEntry,
    Sidecar,
    Telemetry,
    VirtualService,
    WorkloadEntry,
)
from mesh.compile import dump_yaml, load_yaml, render

from .strategies import model

KINDS = [
    Gateway,
    VirtualService,
    DestinationRule,
    PeerAuthentication,
    AuthorizationPolicy,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    EnvoyFilter,
    RequestAuthentication,
    Telemetry,
]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_import_of_render_is_identity(kind: type[Resource]) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(model(kind), min_size=1, max_size=3, unique_by=lambda r: r.name))
    def check(resources: list[Resource]) -> None:
        config = MeshConfig(resources=list(resources))
        text = dump_yaml(render(config))
        back = load_yaml(text, "roundtrip.yaml")
        assert [r.to_manifest() for r in back.sorted_resources()] == [
            r.to_manifest() for r in config.sorted_resources()
        ]
        assert dump_yaml(render(back)) == text

    check()
