"""Progressive delivery: a typed canary rollout the policies declare, advanced step by step on the data path.

`rollouts(env)` in a policies module returns Rollout objects. When a commit changes the canary's weight, the
reconciler does not jump: it applies each step's weight in turn, proves the split and the canary's health from the
data path (success rate from the caller sidecar's Envoy stats for the canary subset's cluster, p99 latency of the
canary's replies), waits `interval`, and rolls back to the last good commit at the first failing step. Each step's
evidence is recorded. The canary's latency is Envoy's own: the calling sidecar's `upstream_rq_time` histogram for
the canary subset's cluster (the client's clock only on a data path that cannot read proxy histograms).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mesh.api import helpers as h
from mesh.api.config import MeshConfig
from mesh.api.networking import VirtualService
from mesh.targets.base import DataPath
from mesh.targets.traffic import Reply
from mesh.verify.derive import rule_for, service_for
from mesh.verify.run import _client, _sample
from mesh.verify.stats import DEFAULT_DEVIATION, SequentialSplit


class Rollout(BaseModel):
    """Shift `service` from subset `stable` to subset `canary` through `steps` (percent), checking each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str
    stable: str
    canary: str
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50, 100], min_length=1)
    interval: float = Field(default=0.0, ge=0)  # seconds to bake at each step before it is judged
    min_success_rate: float = Field(default=0.99, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0)
    caller: str | None = None  # the service whose sidecar sends the step's traffic (default: any allowed caller)
    deviation: float = DEFAULT_DEVIATION


class StepEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: int
    ok: bool
    requests: int
    observed: dict[str, int]
    expected: dict[str, float]
    canary_success_rate: float | None
    canary_p99_ms: float | None
    latency_source: str = "envoy"  # envoy: the calling sidecar's upstream_rq_time histogram; client: our clock
    envoy_canary_rq: dict[str, int] = Field(default_factory=dict)  # upstream_rq_2xx/5xx deltas from Envoy's stats
    detail: str = ""


def final_weight(config: MeshConfig, rollout: Rollout) -> int | None:
    """The canary weight the commit declares: its VirtualService's last (default) rule."""
    vs = next((v for v in config.virtual_services if rollout.service in v.hosts), None)
    if vs is None or not vs.http:
        return None
    weights = {d.destination.subset: d.weight or 0 for d in vs.http[-1].route}
    if rollout.canary not in weights:
        return 0
    total = sum(weights.values()) or 1
    return round(100 * weights[rollout.canary] / total)


def at_weight(config: MeshConfig, rollout: Rollout, weight: int) -> MeshConfig:
    """`config` with the rollout's default rule split stable/canary at `weight` percent."""
    out = MeshConfig(services=list(config.services), resources=[])
    for r in config.resources:
        if isinstance(r, VirtualService) and rollout.service in r.hosts:
            split = h.split(rollout.service, {rollout.stable: 100 - weight, rollout.canary: weight})
            default = r.http[-1].model_copy(update={"route": split.route})  # keep the rule's name, retries, ...
            r = r.model_copy(update={"http": [*r.http[:-1], default]})
        out.resources.append(r)
    return out


def _version(config: MeshConfig, rollout: Rollout, subset: str) -> str:
    dr = rule_for(config, rollout.service)
    for s in dr.subsets if dr else []:
        if s.name == subset:
            return str(s.labels.get("version", subset))
    return subset


def _envoy_counts(dp: DataPath, pod: str, cluster: str) -> dict[str, int]:
    stats = dp.proxy_stats(pod, "^" + re.escape(f"cluster.{cluster}.upstream_rq_") + r"[2345]xx$")
    return {k.rsplit(".", 1)[-1]: v for k, v in stats.items()}


@runtime_checkable
class Histograms(Protocol):
    """A data path that reads a proxy's own histograms (the local target does; others fall back to the client)."""

    def proxy_histogram(self, pod: str, name: str) -> list[tuple[float, int]]: ...


def quantile(before: list[tuple[float, int]], after: list[tuple[float, int]], q: float) -> tuple[float | None, int]:
    """The q-quantile of the samples between two cumulative bucket snapshots, interpolated within its bucket (as
    Prometheus' histogram_quantile does), and how many samples there were."""
    counts = dict(before)
    delta = [(bound, n - counts.get(bound, 0)) for bound, n in after]
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None, 0
    rank, lower, below = q * total, 0.0, 0
    for bound, n in delta:
        if n >= rank:
            inside = n - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0), total
        lower, below = bound, n
    return delta[-1][0], total


def _envoy_p99(dp: Histograms, pod: str, cluster: str, before: list[tuple[float, int]], samples: int) -> float | None:
    """The canary's p99 upstream time from the calling sidecar's histogram. Envoy merges histograms at its stats
    flush (every 5 s unless `mesh up --stats-flush-interval`), so poll until a flush holds this step's `samples`
    requests (deadline: two default flushes)."""
    name = f"cluster.{cluster}.upstream_rq_time"
    deadline = time.monotonic() + 12
    while True:
        p99, n = quantile(before, dp.proxy_histogram(pod, name), 0.99)
        if n >= samples or time.monotonic() > deadline:
            return p99
        time.sleep(0.2)


def check_step(dp: DataPath, config: MeshConfig, rollout: Rollout, weight: int, caller: str) -> StepEvidence:
    """Prove one step: the split holds (sequential test) and the canary is healthy (success rate, p99)."""
    stable_v, canary_v = _version(config, rollout, rollout.stable), _version(config, rollout, rollout.canary)
    svc = service_for(config, rollout.service)
    port = svc.ports[0].number if svc else 9080
    fqdn = svc.fqdn if svc else f"{rollout.service}.default.svc.cluster.local"
    cluster = f"outbound|{port}|{rollout.canary}|{fqdn}"
    client, url = _client(dp, f"pod:{caller}", f"{rollout.service}:{port}")
    pod = dp.pods(caller)[0]
    before = _envoy_counts(dp, pod, cluster)
    hist = dp if rollout.max_p99_ms is not None and isinstance(dp, Histograms) else None
    hist_before = hist.proxy_histogram(pod, f"cluster.{cluster}.upstream_rq_time") if hist else []
    expected = {stable_v: 100 - weight, canary_v: weight}
    test = SequentialSplit({k: v for k, v in expected.items() if v > 0}, deviation=rollout.deviation)
    canary_ms: list[float] = []
    canary_ok = canary_n = 0

    def consume(reply: Reply) -> bool:
        nonlocal canary_ok, canary_n
        version = str(reply.body.get("version")) if isinstance(reply.body, dict) else None
        if version is None and weight == 100:
            version = canary_v  # an error without a body (Envoy's own 503) while everything goes to the canary
        if version == canary_v:
            canary_n += 1
            canary_ok += reply.status < 500
            canary_ms.append(reply.elapsed * 1000)
        return test.add(version or f"status {reply.status}") is not None

    _sample(lambda: client.get(url("/")), consume)
    after = _envoy_counts(dp, pod, cluster)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    envoy_total = sum(
        v for k, v in delta.items() if k in ("upstream_rq_2xx", "upstream_rq_3xx", "upstream_rq_4xx", "upstream_rq_5xx")
    )
    if envoy_total:
        rate: float | None = 1 - delta.get("upstream_rq_5xx", 0) / envoy_total
    else:
        rate = canary_ok / canary_n if canary_n else None
    if hist is not None:
        p99 = _envoy_p99(hist, pod, cluster, hist_before, envoy_total) if envoy_total else None
        latency_source = "envoy"
    else:  # a data path without proxy histograms: the caller's own clock
        canary_ms.sort()
        p99 = canary_ms[min(len(canary_ms) - 1, int(0.99 * len(canary_ms)))] if canary_ms else None
        latency_source = "client"
    ev = test.evidence()
    problems = []
    if not ev.ok:
        problems.append(f"split observed {dict(ev.observed)} vs expected {expected}")
    if rate is not None and rate < rollout.min_success_rate:
        problems.append(f"canary success rate {rate:.3f} < {rollout.min_success_rate}")
    if rollout.max_p99_ms is not None and p99 is not None and p99 > rollout.max_p99_ms:
        problems.append(f"canary p99 {p99:.0f} ms > {rollout.max_p99_ms:g} ms")
    return StepEvidence(
        weight=weight,
        ok=not problems,
        requests=ev.n,
        observed=dict(ev.observed),
        expected={k: float(v) for k, v in expected.items()},
        canary_success_rate=rate,
        canary_p99_ms=p99,
        latency_source=latency_source,
        envoy_canary_rq=delta,
        detail="; ".join(problems),
    )


def steps_to(rollout: Rollout, start: int, goal: int) -> list[int]:
    """The declared steps strictly between the live weight and the goal, then the goal itself."""
    if goal <= start:
        return [goal]
    return [s for s in rollout.steps if start < s < goal] + [goal]


def advance(
    rollout: Rollout,
    config: MeshConfig,
    start: int,
    apply: Callable[[MeshConfig], object],
    dp: DataPath,
    caller: str,
    progress: Callable[[str], None] = lambda _: None,
) -> list[StepEvidence]:
    """Apply and check each step; stop at the first failing one (the caller rolls back)."""
    goal = final_weight(config, rollout)
    evidence: list[StepEvidence] = []
    for weight in steps_to(rollout, start, goal if goal is not None else start):
        progress(f"canary {rollout.service}: step {weight}% ({rollout.canary})")
        apply(at_weight(config, rollout, weight))
        if rollout.interval:
            time.sleep(rollout.interval)  # the declared bake time, not a wait for convergence (apply waited for ACKs)
        step = check_step(dp, config, rollout, weight, caller)
        evidence.append(step)
        if not step.ok:
            break
    return evidence
