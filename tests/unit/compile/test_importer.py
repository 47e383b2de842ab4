"""Importing real-world YAML: everything typed, or a precise error and nothing imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.api import AuthorizationPolicy, DestinationRule, VirtualService
from mesh.compile import load_file, load_yaml, render, to_python
from mesh.errors import ImportFailed

FIXTURES = Path(__file__).parent / "fixtures"


def test_imports_every_kind_with_workloads() -> None:
    config = load_file(FIXTURES / "shop.yaml")
    assert sorted(r.ref for r in config.resources) == [
        "AuthorizationPolicy shop/frontend-viewer",
        "DestinationRule shop/frontend",
        "Gateway shop/shop-gateway",
        "PeerAuthentication shop/frontend",
        "VirtualService shop/shop",
    ]
    (svc,) = config.services
    assert (svc.name, svc.namespace, svc.service_account) == ("frontend", "shop", "shop-frontend")
    (v1,) = svc.versions
    assert (v1.name, v1.replicas, v1.image, v1.labels, v1.env) == (
        "v1",
        2,
        "example/frontend:1.4.2",
        {"tier": "web"},
        {"LOG_LEVEL": "info"},
    )
    vs = config.of_kind(VirtualService)[0]
    assert vs.http[0].retries is not None and vs.http[0].retries.per_try_timeout == "2s"
    assert vs.http[2].fault is not None and vs.http[2].fault.delay is not None
    dr = config.of_kind(DestinationRule)[0]
    assert dr.traffic_policy and dr.traffic_policy.outlier_detection
    assert dr.traffic_policy.outlier_detection.consecutive_5xx_errors == 3
    ap = config.of_kind(AuthorizationPolicy)[0]
    assert ap.rules[0].from_[1].source.namespaces == ["shop"]


def _istio_docs(text: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] not in ("Service", "Deployment", "ServiceAccount")]
    for d in docs:
        d["apiVersion"] = d["apiVersion"].split("/")[0]  # v1alpha3/v1beta1 render as v1: same schema
        d["metadata"] = {k: v for k, v in d["metadata"].items() if k in ("name", "namespace")}
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))


def test_render_of_import_is_semantically_the_input() -> None:
    text = (FIXTURES / "shop.yaml").read_text()
    rendered = render(load_yaml(text), workloads=False)
    assert _istio_docs(yaml.safe_dump_all(rendered)) == _istio_docs(text)


def test_import_then_python_then_build_is_the_same_config(tmp_path: Path) -> None:
    from mesh.compile import build_policies

    config = load_file(FIXTURES / "shop.yaml")
    pkg = tmp_path / "imported"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(to_python(config))
    rebuilt = build_policies("default", pkg)
    assert render(rebuilt) == render(config)


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec:\n  hosts: [a]\n"
            "  http:\n  - route:\n    - destination: {host: a}\n      wieght: 5\n",
            "x.yaml:9: VirtualService default/a: spec.http[0].route[0].wieght: unknown field",
        ),
        (
            "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec:\n  hosts: [a]\n"
            "  http:\n  - route:\n    - destination: {host: a}\n      weight: -5\n",
            "x.yaml:9: VirtualService default/a: spec.http[0].route[0].weight: Input should be greater than or equal to 0",
        ),
        (
            "kind: ProxyConfig\napiVersion: networking.istio.io/v1beta1\nmetadata: {name: a}\nspec: {}\n",
            "x.yaml:1: unsupported kind 'ProxyConfig'",
        ),
        (
            "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec:\n  hosts: [a\n",
            "x.yaml:6: not valid YAML",
        ),
        (
            "kind: DestinationRule\napiVersion: networking.istio.io/v1\nmetadata: {namespace: x}\nspec: {host: a}\n",
            "DestinationRule has no metadata.name",
        ),
        ("- just\n- a list\n", "x.yaml:1: expected a mapping with apiVersion and kind"),
        (
            "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec:\n  hosts: [a]\n"
            "  http:\n  - route:\n    - destination: {host: a}\n    timeout: soon\n",
            "x.yaml:9: VirtualService default/a: spec.http[0].timeout: Value error, 'soon' is not a duration",
        ),
    ],
)
def test_malformed_input_gets_a_precise_error(text: str, message: str) -> None:
    with pytest.raises(ImportFailed) as e:
        load_yaml(text, "x.yaml")
    assert message in str(e.value)


def test_kubernetes_list_kind_is_unwrapped() -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "DestinationRule",
                    "metadata": {"name": "a"},
                    "spec": {"host": "a"},
                }
            ],
        }
    )
    assert [r.ref for r in load_yaml(text).resources] == ["DestinationRule default/a"]


def test_deployment_without_service_is_an_error() -> None:
    text = (FIXTURES / "shop.yaml").read_text().split("---", 2)[2]  # drop the ServiceAccount and Service
    with pytest.raises(ImportFailed, match="Deployment for app=frontend in shop has no Service"):
        load_yaml(text, "x.yaml")
