"""`python -m mesh.targets.kubernetes preview|output --env STACK`: what the workflows need beyond `mesh up|down`.

python -m mesh.targets.kubernetes preview --env staging          # pulumi preview --diff, to stdout
python -m mesh.targets.kubernetes output kubeconfig --env ci     # a stack output (secrets in clear)
"""

from __future__ import annotations

import argparse
import os
import sys

from mesh.errors import MeshError
from mesh.targets.kubernetes import automation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.targets.kubernetes")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("preview").add_argument("--env", required=True)
    out = sub.add_parser("output")
    out.add_argument("name")
    out.add_argument("--env", required=True)
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        if args.command == "preview":
            print(automation.preview(args.env, progress))
        else:
            print(automation.output(args.env, args.name, progress))
    except MeshError as e:
        if os.environ.get("MESH_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
