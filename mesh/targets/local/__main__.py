"""The detached mesh (`mesh up --detach`): reads a ServeRequest from stdin and serves until SIGTERM (`mesh down`)."""

import contextlib
import json
import sys
from pathlib import Path

from mesh.controlplane import prepare_process
from mesh.dataplane import zygote

prepare_process()
request = sys.stdin.buffer.read()
# the sample apps' parent imports while we do: read with json alone, before the models are imported (a bad request
# is reported by the validation below)
with contextlib.suppress(ValueError, KeyError, TypeError):
    zygote.prestart(Path(json.loads(request)["options"]["state_dir"]) / "zygote.log")

from mesh.targets.local.target import ServeRequest, serve  # noqa: E402  (after prepare_process, which precedes grpc)

try:
    serve(ServeRequest.model_validate_json(request), progress=lambda msg: print(msg, flush=True))
finally:
    zygote.discard()  # unless the mesh adopted it
