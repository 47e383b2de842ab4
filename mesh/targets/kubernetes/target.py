"""KubernetesTarget: the Target protocol on a cluster with Istio.

Infrastructure (kind, Istio's Helm charts, workloads) is the Pulumi stack's (`automation.up`/`down`); policies are
applied here, directly through the API server (`cluster.py`), so `mesh apply`, the reconciler and the e2e harness
change them in seconds without a Pulumi run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import yaml

from mesh import analyze as analysis
from mesh.api.config import MeshConfig
from mesh.compile import load_yaml, render_istio
from mesh.compile.diff import diff_configs
from mesh.errors import TargetError
from mesh.targets import capabilities
from mesh.targets.base import ApplyResult, ChangeModel, Progress, ProxyStatus, TargetStatus
from mesh.targets.kubernetes.cluster import Cluster
from mesh.targets.kubernetes.datapath import Kubectl, KubernetesDataPath, reuse_kind_cluster
from mesh.targets.local.api import finding_model

log = logging.getLogger("mesh.kubernetes")

DEFAULT_INGRESS = "http://localhost:8080"
_SERVER_FIELDS = ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields")


class KubernetesTarget:
    name = "kubernetes"
    foreground = False  # the cluster outlives the command that made it

    def __init__(
        self,
        stack: str = "dev",
        *,
        policies: str = "policies",
        api_client: Any = None,
        kubeconfig: str | None = None,
        ingress_url: str | None = None,
        kubectl: Kubectl | None = None,
        config: MeshConfig | None = None,
        propagation_timeout: float = 90.0,
        propagation_poll: float = 0.5,
    ) -> None:
        self.stack = stack
        self.policies = policies
        self.kubeconfig = kubeconfig or os.environ.get("MESH_KUBECONFIG")
        self.ingress_url = ingress_url or os.environ.get("MESH_INGRESS_URL", DEFAULT_INGRESS)
        self.kubectl = kubectl
        self.config = config  # the last config applied through this target: pods map to its services
        self.propagation_timeout = propagation_timeout
        self.propagation_poll = propagation_poll
        self._api_client = api_client
        self._cluster: Cluster | None = None

    @classmethod
    def from_environment(cls, config: MeshConfig | None = None) -> KubernetesTarget:
        """The cluster `mesh up --target kubernetes` made (MESH_KUBECONFIG, or the kind cluster MESH_KIND_CLUSTER)."""
        if not os.environ.get("MESH_KUBECONFIG"):
            os.environ["MESH_KUBECONFIG"] = str(reuse_kind_cluster(os.environ.get("MESH_KIND_CLUSTER", "meshops-ci")))
        target = cls(config=config)
        target.cluster.istiod_pod()  # fail fast with a clear error
        return target

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            if self._api_client is None:
                from kubernetes import config as kubeconfig

                try:
                    self._api_client = _api_client(self.kubeconfig)
                except (kubeconfig.ConfigException, OSError) as e:
                    raise TargetError(
                        f"no usable kubeconfig: {e}",
                        hint="set MESH_KUBECONFIG (`pulumi stack output kubeconfig --show-secrets > kubeconfig`)",
                    ) from None
            self._cluster = Cluster(self._api_client)
        return self._cluster

    # --- infrastructure: the Pulumi stack -----------------------------------------------------------------

    def up(self, config: MeshConfig, progress: Progress | None = None) -> TargetStatus:
        from mesh.targets.kubernetes.automation import up

        outputs = up(self.stack, progress=progress or log.info, policies=self.policies)
        self.config = config
        self.ingress_url = str(outputs.get("ingress_url") or self.ingress_url)
        return TargetStatus(
            target=self.name,
            env=self.stack,
            running=True,
            revision=str(outputs.get("policy_revision") or ""),
            ingress_url=self.ingress_url,
        )

    def down(self) -> None:
        from mesh.targets.kubernetes.automation import down

        down(self.stack, progress=log.info, policies=self.policies)

    def policy_env(self) -> str:
        """The policy environment the stack deploys (a stack is not an environment: `staging` may run `prod`)."""
        from mesh.targets.kubernetes.automation import resolve

        return resolve(self.stack).policy_env

    # --- policies -----------------------------------------------------------------------------------------

    def apply(
        self, config: MeshConfig, *, dry_run: bool = False, prune: bool = True, wait: float = 10.0, analyze: bool = True
    ) -> ApplyResult:
        """Server-side apply of the rendered policies, prune of meshops' objects the config dropped, then wait until
        istiod and every proxy have them. On Kubernetes `wait` is raised to `propagation_timeout` (istiod debounces
        pushes): the default 10 s of a local apply is too short for a cluster."""
        found = analysis.check(config, capabilities("kubernetes")) if analyze else []
        live = self.live_config()
        if not prune:
            incoming = {r.key for r in config.resources}
            config = MeshConfig(
                services=config.services,
                resources=[r for r in live.resources if r.key not in incoming] + list(config.resources),
            )
        diff = [
            ChangeModel(op=c.op, ref=c.ref, patch=c.patch)
            for c in diff_configs(MeshConfig(services=config.services, resources=live.resources), config)
        ]
        manifests = render_istio(config)
        applied = self.cluster.apply(manifests, dry_run=dry_run)
        if prune:
            self.cluster.prune({a.key for a in applied}, dry_run=dry_run)
        result = ApplyResult(
            target=self.name,
            revision=max((a.resource_version for a in applied), key=_as_int, default=""),
            dry_run=dry_run,
            diff=diff,
            findings=[finding_model(f) for f in found],
        )
        if dry_run:
            return result
        self.cluster.wait_propagated(
            {a.resource_version for a in applied},
            timeout=max(wait, self.propagation_timeout),
            poll=self.propagation_poll,
        )
        self.config = config
        proxies = {p.proxy: p.state for p in self.cluster.proxy_status()}
        return result.model_copy(update={"proxies": proxies})

    def live_config(self) -> MeshConfig:
        """The policies meshops manages on the cluster now (workloads are the Pulumi stack's: not read back)."""
        docs = [_declared(o) for o in self.cluster.managed_objects()]
        return load_yaml(yaml.safe_dump_all(docs, sort_keys=False), f"cluster:{self.stack}") if docs else MeshConfig()

    # --- reading ------------------------------------------------------------------------------------------

    def status(self) -> TargetStatus:
        try:
            self.cluster.istiod_pod()
        except TargetError as e:
            return TargetStatus(target=self.name, env=self.stack, running=False, detail=str(e))
        except Exception as e:  # the API server is unreachable: report, do not crash `mesh status`
            return TargetStatus(target=self.name, env=self.stack, running=False, detail=f"{type(e).__name__}: {e}")
        return TargetStatus(target=self.name, env=self.stack, running=True, ingress_url=self.ingress_url)

    def proxy_status(self) -> list[ProxyStatus]:
        return self.cluster.proxy_status()

    def data_path(self) -> KubernetesDataPath:
        return KubernetesDataPath(self.config or MeshConfig(), self.cluster, self.ingress_url, self.kubectl)


def _api_client(kubeconfig_file: str | None) -> Any:
    """A kubeconfig when one is named; inside a pod without one (the in-cluster reconciler), the pod's service
    account token and the API server from KUBERNETES_SERVICE_HOST, as every in-cluster controller does."""
    from kubernetes import client
    from kubernetes import config as kubeconfig

    if kubeconfig_file is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        kubeconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    return kubeconfig.new_client_from_config(config_file=kubeconfig_file)  # type: ignore[no-untyped-call]


def _declared(obj: dict[str, Any]) -> dict[str, Any]:
    """A live object as it was declared: apiVersion, kind, name/namespace/labels/annotations, spec."""
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in _SERVER_FIELDS}
    labels = {k: v for k, v in meta.get("labels", {}).items() if k != "app.kubernetes.io/managed-by"}
    meta = {**meta, "labels": labels} if labels else {k: v for k, v in meta.items() if k != "labels"}
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if not k.startswith("kubectl.kubernetes.io/")}
    meta = (
        {**meta, "annotations": annotations} if annotations else {k: v for k, v in meta.items() if k != "annotations"}
    )
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, "spec": obj.get("spec", {})}


def _as_int(version: str) -> int:
    return int(version) if version.isdigit() else -1
