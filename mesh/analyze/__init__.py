"""The Galley role: analysis before anything is applied. Errors block; warnings and infos do not."""

from __future__ import annotations

from mesh.analyze import analyzers as _analyzers  # noqa: F401  (registers every analyzer)
from mesh.analyze.context import REGISTRY, Analyzer, Context, Inventory, TargetCapabilities, Workload
from mesh.analyze.findings import MESSAGES, Finding, Message
from mesh.api.config import MeshConfig
from mesh.errors import AnalysisFailed

_LEVEL_ORDER = {"Error": 0, "Warning": 1, "Info": 2}


def analyze(
    config: MeshConfig, target: TargetCapabilities | None = None, inventory: Inventory | None = None
) -> list[Finding]:
    """Every finding, errors first, then by object and field path: stable across runs."""
    ctx = Context(config, target, inventory or Inventory())
    found = [f for a in REGISTRY for f in a.run(ctx)]
    return sorted(set(found), key=lambda f: (_LEVEL_ORDER[f.level], f.resource, f.path, f.code, f.message))


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "Error"]


def check(
    config: MeshConfig, target: TargetCapabilities | None = None, inventory: Inventory | None = None
) -> list[Finding]:
    """Analyze and raise AnalysisFailed on any error; returns the non-blocking findings."""
    found = analyze(config, target, inventory)
    if errors(found):
        raise AnalysisFailed(found)
    return found


__all__ = [
    "MESSAGES",
    "REGISTRY",
    "Analyzer",
    "Finding",
    "Inventory",
    "Message",
    "TargetCapabilities",
    "Workload",
    "analyze",
    "check",
    "errors",
]
