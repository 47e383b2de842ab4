"""The control plane: translate Istio resources to Envoy config (Pilot), serve it over ADS, issue SVIDs (Citadel).

Data flows one way: MeshConfig + workload registry -> translate (per proxy) -> Snapshot -> cache -> ADS stream.
"""

import os

# grpcio and fork(): we spawn Envoys from a process that runs a gRPC server.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
