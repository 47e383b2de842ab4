"""`--target NAME` -> a Target: the one place that knows which implementations exist (the CLI never branches)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from mesh.errors import UnknownTarget
from mesh.targets.base import Target
from mesh.targets.local.options import LocalOptions


class TargetSettings(BaseModel):
    """Everything a command may tell a target. Each target reads the fields it needs."""

    model_config = ConfigDict(extra="forbid")

    env: str = "dev"  # the policy environment, and the Pulumi stack on Kubernetes
    policies: str = "policies"
    detach: bool = True  # local: run the mesh in the background (False: in this process, until `down`)
    local: LocalOptions = Field(default_factory=LocalOptions)


def _local(settings: TargetSettings) -> Target:
    from mesh.targets.local.target import LocalTarget

    return LocalTarget(settings.local, detach=settings.detach, env=settings.env, policies=settings.policies)


def _kubernetes(settings: TargetSettings) -> Target:
    from mesh.targets.kubernetes.target import KubernetesTarget

    return KubernetesTarget(stack=settings.env, policies=settings.policies)


TARGETS: dict[str, Callable[[TargetSettings], Target]] = {"local": _local, "kubernetes": _kubernetes}


def create(name: str, settings: TargetSettings | None = None) -> Target:
    try:
        factory = TARGETS[name]
    except KeyError:
        raise UnknownTarget(name, sorted(TARGETS)) from None
    return factory(settings or TargetSettings())
