"""Importing Kubernetes workloads: every field is modelled or an error naming it — never dropped with exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mesh.compile import build_policies, dump_yaml, load_yaml, render, render_workloads, to_python
from mesh.errors import ImportFailed

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels: {app: httpbin, service: httpbin}
spec:
  selector: {app: httpbin}
  ports:
  - {name: http, port: 8000, targetPort: 8080}
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin}
spec:
  replicas: 1
  selector:
    matchLabels: {app: httpbin, version: v1}
  template:
    metadata:
      labels: {app: httpbin, version: v1}
    spec:
      containers:
      - name: httpbin
        image: docker.io/kong/httpbin
        ports: [{containerPort: 8080}]
"""


def test_names_and_service_labels_are_kept() -> None:
    config = load_yaml(SERVICE + "---\n" + DEPLOYMENT)
    (svc,) = config.services
    assert svc.labels == {"service": "httpbin"}
    rendered = {(m["kind"], m["metadata"]["name"]): m for m in render_workloads(config)}
    assert ("Deployment", "httpbin") in rendered  # not renamed to httpbin-v1
    assert rendered[("Service", "httpbin")]["metadata"]["labels"] == {"app": "httpbin", "service": "httpbin"}


@pytest.mark.parametrize(
    "extra,path",
    [
        ("        command: [gunicorn]\n", "spec.template.spec.containers[0].command"),
        ("        args: [--bind, 0.0.0.0]\n", "spec.template.spec.containers[0].args"),
        ("        resources: {limits: {cpu: 100m}}\n", "spec.template.spec.containers[0].resources"),
        ("        volumeMounts: [{name: tmp, mountPath: /tmp}]\n", "spec.template.spec.containers[0].volumeMounts"),
        ("      terminationGracePeriodSeconds: 5\n", "spec.template.spec.terminationGracePeriodSeconds"),
        ("      volumes: [{name: tmp, emptyDir: {}}]\n", "spec.template.spec.volumes"),
    ],
)
def test_unmodelled_fields_are_errors_naming_them(extra: str, path: str) -> None:
    with pytest.raises(ImportFailed) as e:
        load_yaml(SERVICE + "---\n" + DEPLOYMENT + extra, "w.yaml")
    assert f"Deployment default/httpbin: {path}: not modelled by meshops" in str(e.value)
    assert "w.yaml:" in str(e.value)


def test_env_from_a_secret_is_an_error() -> None:
    env = "        env:\n        - name: TOKEN\n          valueFrom: {secretKeyRef: {name: s, key: t}}\n"
    with pytest.raises(ImportFailed, match=r"env\[0\].valueFrom: env TOKEN from a Secret"):
        load_yaml(SERVICE + "---\n" + DEPLOYMENT + env, "w.yaml")


def test_named_target_port_is_an_error_not_dropped() -> None:
    with pytest.raises(ImportFailed, match="named target ports are not modelled"):
        load_yaml(SERVICE.replace("targetPort: 8080", "targetPort: http") + "---\n" + DEPLOYMENT)


def test_rendered_workloads_round_trip_without_duplicating_env() -> None:
    config = build_policies("e2e")
    for svc in config.services:
        for v in svc.versions:
            v.env = {**v.env, "LOG_LEVEL": "debug"}
    text = dump_yaml(render(config))
    back = load_yaml(text, "rendered.yaml")
    assert dump_yaml(render(back)) == text
    assert {s.name: [v.env for v in s.versions] for s in back.services} == {
        s.name: [v.env for v in s.versions] for s in config.services
    }


def test_pods_are_workloads() -> None:
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: httpbin-1, labels: {app: httpbin, version: v1}}\n"
        "spec: {containers: [{name: httpbin, image: x}]}\n"
    )
    config = load_yaml(SERVICE + "---\n" + pod + "---\n" + pod.replace("httpbin-1", "httpbin-2"))
    (svc,) = config.services
    assert [(v.name, v.replicas) for v in svc.versions] == [("v1", 2)]


def test_generated_module_builds_the_cli_default_environment(tmp_path: Path) -> None:
    pkg = tmp_path / "imported"
    pkg.mkdir()
    config = load_yaml(SERVICE + "---\n" + DEPLOYMENT)
    (pkg / "__init__.py").write_text(to_python(config))
    assert render(build_policies("dev", pkg)) == render(config)


def test_deployment_template_labels_must_cover_its_selector() -> None:
    bad = DEPLOYMENT.replace("matchLabels: {app: httpbin, version: v1}", "matchLabels: {app: httpbin, tier: x}")
    with pytest.raises(ImportFailed, match=r"spec\.selector\.matchLabels: must be a subset"):
        load_yaml(SERVICE + "---\n" + bad)


def test_service_account_labels_are_not_dropped() -> None:
    sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: httpbin, labels: {account: httpbin}}\n"
    with pytest.raises(ImportFailed, match=r"labels \['account'\] are not modelled"):
        load_yaml(sa + "---\n" + SERVICE + "---\n" + DEPLOYMENT)
    assert yaml.safe_load(sa)["metadata"]["name"] == "httpbin"


def test_a_headless_service_and_its_stateful_set_round_trip() -> None:
    headless = SERVICE.replace("spec:\n", "spec:\n  clusterIP: None\n", 1)
    stateful = (
        DEPLOYMENT.replace("kind: Deployment", "kind: StatefulSet")
        .replace("metadata: {name: httpbin}", "metadata: {name: httpbin-v1}")
        .replace("spec:\n  replicas: 1", "spec:\n  serviceName: httpbin\n  replicas: 2", 1)
    )
    config = load_yaml(headless + "---\n" + stateful)
    (svc,) = config.services
    assert svc.headless and svc.versions[0].replicas == 2
    rendered = {m["kind"]: m for m in render_workloads(config)}
    assert rendered["Service"]["spec"]["clusterIP"] == "None"
    assert rendered["StatefulSet"]["metadata"]["name"] == "httpbin-v1"  # pods httpbin-v1-0, -1, as the local mesh
    assert rendered["StatefulSet"]["spec"]["serviceName"] == "httpbin"
    assert "Deployment" not in rendered
    assert "headless=True" in to_python(config)
    again = render_workloads(load_yaml(dump_yaml(render_workloads(config))))
    assert again == render_workloads(config)


@pytest.mark.parametrize(
    "service,workload,message",
    [
        ("  clusterIP: 10.96.0.10\n", "", r"spec\.clusterIP.*not modelled"),
        ("  clusterIP: None\n", "", r"make this a StatefulSet with serviceName: httpbin"),
        ("", "StatefulSet", r"only for a headless Service"),
    ],
)
def test_workload_kinds_must_match_the_service(service: str, workload: str, message: str) -> None:
    doc = DEPLOYMENT.replace("kind: Deployment", f"kind: {workload}") if workload else DEPLOYMENT
    if workload:
        doc = doc.replace("spec:\n  replicas: 1", "spec:\n  serviceName: httpbin\n  replicas: 1", 1)
    with pytest.raises(ImportFailed, match=message):
        load_yaml(SERVICE.replace("spec:\n", "spec:\n" + service, 1) + "---\n" + doc)
