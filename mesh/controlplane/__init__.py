"""The control plane: translate Istio resources to Envoy config (Pilot), serve it over ADS, issue SVIDs (Citadel).

Data flows one way: MeshConfig + workload registry -> translate (per proxy) -> Snapshot -> cache -> ADS stream.
"""

import os


def prepare_process() -> None:
    """Call once at a program's entry, before grpc is imported: we spawn Envoys from a process that serves gRPC, and
    grpcio's fork handlers must stay off for that. A library import never changes the environment; entry points
    (the CLI, the detached mesh, the pytest plugin) call this."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
