"""The detached mesh (`mesh up --detach`): reads a ServeRequest from stdin and serves until SIGTERM (`mesh down`)."""

import sys

from mesh.targets.local.target import ServeRequest, serve

serve(ServeRequest.model_validate_json(sys.stdin.buffer.read()), progress=lambda msg: print(msg, flush=True))
