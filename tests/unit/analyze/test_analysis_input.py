"""`mesh analyze -f` as `istioctl analyze` reads files: merged with what runs (the environment's policies and
workloads), `--isolated` alone; Pods are workloads and Secrets the credentials gateways name."""

from __future__ import annotations

import json
from pathlib import Path

from mesh.analyze import Inventory, Workload, analyze
from mesh.compile import load_yaml
from tests.unit.cli.test_policy_commands import mesh

PARTIAL = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: istio-system}
spec:
  selector: {istio: shop-gw}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
"""

POD = """
apiVersion: v1
kind: Pod
metadata: {name: shop-gw-1, namespace: istio-system, labels: {istio: shop-gw}}
spec:
  containers:
  - {name: istio-proxy, image: istio/proxyv2}
"""

SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: shop-cert, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: eA==, tls.key: eA==}
"""


def _codes(out: str) -> set[tuple[str, str]]:
    return {(f["code"], f["path"]) for f in json.loads(out)}


def test_partial_file_is_analyzed_merged_with_the_environment() -> None:
    """One valid VirtualService: clean against dev (its services and DestinationRules), not 'known services: none'."""
    out = mesh("analyze", "--env", "dev", "-f", "-", "-o", "json", stdin=PARTIAL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout) == []


def test_isolated_analyzes_the_file_alone() -> None:
    out = mesh("analyze", "-f", "-", "--isolated", "-o", "json", stdin=PARTIAL)
    assert out.returncode == 79
    assert _codes(out.stdout) == {
        ("IST0101", "spec.http[0].route[0].destination.host"),
        ("IST0101", "spec.http[0].route[0].destination.subset"),
    }


def test_the_files_objects_replace_their_namesakes(tmp_path: Path) -> None:
    """dev's own `reviews` VirtualService is replaced, not doubled: no IST0109 conflict."""
    f = tmp_path / "reviews.yaml"
    f.write_text(PARTIAL.replace("subset: v1", "subset: v9"))
    out = mesh("analyze", "--env", "dev", "-f", str(f), "-o", "json")
    assert out.returncode == 79
    assert _codes(out.stdout) == {("IST0101", "spec.http[0].route[0].destination.subset")}


def test_pods_are_workloads_and_secrets_are_credentials() -> None:
    alone = mesh("analyze", "-f", "-", "-o", "json", stdin=GATEWAY)
    assert _codes(alone.stdout) == {("IST0101", "spec.selector")}  # no workload has istio=shop-gw
    with_pod = mesh("analyze", "-f", "-", "-o", "json", stdin=GATEWAY + "---" + POD)
    assert with_pod.returncode == 0 and json.loads(with_pod.stdout) == []
    other_secret = SECRET.replace("name: shop-cert", "name: other-cert")
    missing = mesh("analyze", "-f", "-", "-o", "json", stdin=GATEWAY + "---" + POD + "---" + other_secret)
    assert _codes(missing.stdout) == {("IST0101", "spec.servers[0].tls.credentialName")}
    present = mesh("analyze", "-f", "-", "-o", "json", stdin=GATEWAY + "---" + POD + "---" + SECRET)
    assert present.returncode == 0, present.stdout


def test_credentials_are_checked_only_when_known() -> None:
    config = load_yaml(GATEWAY)
    pods = (Workload("istio-system", {"istio": "shop-gw"}),)
    assert analyze(config, inventory=Inventory(workloads=pods)) == []  # unknown: a target may issue them
    (f,) = analyze(config, inventory=Inventory(workloads=pods, credentials=frozenset()))
    assert (f.code, f.path) == ("IST0101", "spec.servers[0].tls.credentialName")


def test_a_pod_of_a_service_in_the_file_stays_a_version_of_it() -> None:
    svc = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {port: 80, name: http}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web, version: v1}}
spec:
  containers:
  - {name: web, image: nginx}
"""
    from mesh.compile import Observed

    observed = Observed()
    config = load_yaml(svc, observed=observed)
    assert [s.name for s in config.services] == ["web"]
    assert observed.pods == [("default", {"app": "web", "version": "v1"})]
