"""`mesh`: the command line. Commands are thin; the work lives in the role packages.

The group (`cli`) lives in `mesh.cli.group`, loaded on first use: a plain `mesh --help` replays the page click
rendered last time (`mesh.cli.fasthelp`) and a plain `mesh status` reads the local mesh (`mesh.cli.localstatus`)
before click is even imported.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.cli.group import EPILOG as EPILOG
    from mesh.cli.group import MeshGroup as MeshGroup
    from mesh.cli.group import cli as cli


def __getattr__(name: str) -> Any:
    """`from mesh.cli import cli` (every command module) loads the group and click with it."""
    if name in ("cli", "MeshGroup", "EPILOG"):
        from mesh.cli import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    from mesh.cli import fasthelp

    page = fasthelp.cached(sys.argv[1:])
    if page is not None:
        sys.stdout.write(page + "\n")  # as click.echo writes it
        return
    from mesh.cli import localstatus

    code = localstatus.plain_status(sys.argv[1:])  # a plain `mesh status`, also before click
    if code is not None:
        sys.exit(code)
    from mesh.controlplane import prepare_process

    prepare_process()
    from mesh.cli import commands, group, meshcmds, observe, reconcile  # noqa: F401  (registers commands)

    group.remember_help = True
    group.cli(prog_name="mesh")
