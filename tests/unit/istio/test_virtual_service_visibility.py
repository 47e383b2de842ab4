"""VirtualService exportTo: which namespaces' proxies a VirtualService applies to (Istio's VirtualServicesForGateway)."""

from __future__ import annotations

import pytest

from mesh.api import HTTPRoute, VirtualService
from mesh.api import helpers as h
from mesh.istio import virtual_service_visible


def _vs(export_to: list[str], namespace: str = "team") -> VirtualService:
    return VirtualService(
        name="r", namespace=namespace, hosts=["echo"], http=[HTTPRoute(route=[h.to("echo", "v2")])], export_to=export_to
    )


@pytest.mark.parametrize(
    ("export_to", "namespace", "visible"),
    [
        ([], "team", True),  # unset: every namespace
        ([], "other", True),
        (["*"], "other", True),
        (["."], "team", True),  # its own namespace
        (["."], "other", False),
        (["other"], "other", True),  # named namespaces only
        (["other"], "team", False),  # naming others does not include its own
        ([".", "other"], "team", True),
        ([".", "other"], "third", False),
        (["~"], "team", False),  # exported to no namespace
        (["*", "."], "other", True),  # `*` wins
    ],
)
def test_export_to_decides_which_namespaces_see_a_virtual_service(
    export_to: list[str], namespace: str, visible: bool
) -> None:
    assert virtual_service_visible(_vs(export_to), namespace) is visible
