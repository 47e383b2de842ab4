"""The `mesh` group: our errors become one message and an exit code. Every command module registers on `cli`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from mesh.errors import MeshError

EPILOG = """\b
Exit codes:
  0   ok                                    69  target unavailable, or a workload
  1   simulate: no route matched                change that needs `mesh up`
  2   usage (also an unknown pod or         70  internal error
      proxy name)                           75  stale --base-revision
  64  an unknown --target                   76  the data plane rejected the push or
  65  malformed input                           did not confirm it (rolled back)
  79  analysis errors                       80  any other error (the message says)
`mesh reconcile --help` lists its own (3, 4, 66, 78).
Set MESH_DEBUG=1 to see tracebacks."""


# set by main() once every command module is registered: only then is the top-level page complete
remember_help = False


class MeshGroup(click.Group):
    """Turns our errors into one clear message and an exit code; tracebacks only with MESH_DEBUG=1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeshError as e:
            if os.environ.get("MESH_DEBUG"):
                raise
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(e.exit_code)

    def get_help(self, ctx: click.Context) -> str:
        page = super().get_help(ctx)
        if remember_help and ctx.parent is None:  # the next plain `mesh --help` replays it without click
            from mesh.cli import fasthelp

            fasthelp.remember(page)
        return page


@click.group(cls=MeshGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshops", prog_name="mesh")
def cli() -> None:
    """meshops: Istio traffic policy as typed Python, reconciled from git and proven on real Envoy.

    \b
    Start here:
      mesh render --env dev        # the Istio YAML your policies compile to
      mesh analyze --env dev       # check them before anything is applied
      mesh up --env dev            # a local mesh of real Envoy proxies running them
    """
