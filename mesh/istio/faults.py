"""Fault percentages as Istio passes them to Envoy: a fault without a percentage never fires (istio/istio#36303).

Istio copies `percentage` when it is set; otherwise a delay carries its deprecated integer `percent` (0 when unset)
and an abort carries nothing. Envoy reads an absent or zero fraction as 0%, so such a fault is inert.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.api.networking import Abort, Delay


@dataclass(frozen=True)
class FaultShare:
    """The share of requests a fault fires on, and whether it is the legacy integer (denominator HUNDRED)."""

    percent: float
    legacy: bool = False


def fault_share(injection: Delay | Abort) -> FaultShare | None:
    """What Istio sends Envoy for this delay or abort; None when it sends no percentage at all (an abort)."""
    if injection.percentage is not None:
        return FaultShare(injection.percentage.value)
    if isinstance(injection, Delay):
        return FaultShare(float(injection.percent or 0), legacy=True)
    return None


def fires(injection: Delay | Abort) -> bool:
    """Whether the fault can fire at all."""
    share = fault_share(injection)
    return share is not None and share.percent > 0
