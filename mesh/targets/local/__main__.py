"""The detached mesh (`mesh up --detach`): reads a ServeRequest from stdin and serves until SIGTERM (`mesh down`)."""

import sys

from mesh.controlplane import prepare_process

prepare_process()

from mesh.targets.local.target import ServeRequest, serve  # noqa: E402  (after prepare_process, which precedes grpc)

serve(ServeRequest.model_validate_json(sys.stdin.buffer.read()), progress=lambda msg: print(msg, flush=True))
