"""Names Istio gives meaning to; one copy each, read by analysis, translation and the runtime model."""

from __future__ import annotations

from mesh.api.workloads import CLUSTER_DOMAIN

ROOT_NAMESPACE = "istio-system"  # meshConfig.rootNamespace: mesh-wide policies live here
MESH_GATEWAY = "mesh"  # the reserved gateway name: the sidecars of the mesh
DOMAIN_SUFFIX = CLUSTER_DOMAIN  # `<svc>.<ns>.svc.<suffix>`
DEFAULT_MTLS_MODE = "PERMISSIVE"  # what a workload accepts when no PeerAuthentication decides
# The labels of the ingress gateway every target runs (Istio's gateway chart): the workload a Gateway's default
# selector `istio: ingressgateway` finds.
INGRESS_GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
# The egress gateway's (Istio's egress task: `istio: egressgateway`), and its Service as sidecars route to it.
EGRESS_GATEWAY_LABELS = {"istio": "egressgateway", "app": "istio-egressgateway"}
EGRESS_GATEWAY_NAME = "istio-egressgateway"
