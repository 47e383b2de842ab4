"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def env_option(f: F) -> F:
    return click.option(
        "--env",
        "-e",
        default="dev",
        show_default=True,
        envvar="MESH_ENV",
        help="Policy environment to build (as defined by ENVIRONMENTS in the policies package). Env: MESH_ENV.",
    )(f)


def policies_option(f: F) -> F:
    return click.option(
        "--policies",
        "-p",
        default="policies",
        show_default=True,
        envvar="MESH_POLICIES",
        type=click.Path(file_okay=True, dir_okay=True),
        help="Policies package: a directory whose __init__.py defines build(env). Env: MESH_POLICIES.",
    )(f)


def file_option(help_text: str) -> Callable[[F], F]:
    return click.option("--file", "-f", "file", type=click.Path(dir_okay=False, allow_dash=True), help=help_text)
