"""Run probes through a DataPath and report evidence: observed vs expected, per probe, with the decision.

Requests go out a few at a time (a thread pool) and the sequential tests consume them in order, so a correct split
is proven with the fewest rounds; a probe that fails says what it saw, which the reconciler records as evidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field

from mesh.targets.base import Client, DataPath
from mesh.targets.traffic import Reply
from mesh.verify.probes import (
    DeniedProbe,
    FractionProbe,
    PlaintextRefusedProbe,
    Probe,
    SplitProbe,
    StatusProbe,
)
from mesh.verify.stats import SequentialBinomial, SequentialSplit

PARALLEL = 8


class ProbeResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    ok: bool
    requests: int = 0
    detail: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    ms: float = 0.0


class Verification(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    results: list[ProbeResult] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    requests: int = 0
    ms: float = 0.0

    def failures(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        if self.ok:
            return f"{len(self.results)} check(s) passed with {self.requests} requests in {self.ms / 1000:.1f}s"
        return "; ".join(f"{r.name}: {r.detail}" for r in self.failures())


def _client(dp: DataPath, via: str, host: str | None) -> tuple[Client, Callable[[str], str]]:
    """The client for a probe, and how a path becomes what that client sends (pods send absolute URLs)."""
    if via.startswith("pod:"):
        pods = dp.pods(via.removeprefix("pod:"))
        if not pods:
            raise LookupError(f"no pod of service {via.removeprefix('pod:')!r} to send from")
        return dp.from_pod(pods[0]), lambda path: f"http://{host}{path}"
    return dp.ingress(host), lambda path: path


def _version(reply: Reply, call: str | None) -> str:
    if reply.status != 200 or not isinstance(reply.body, dict):
        return f"status {reply.status}"
    body = reply.call(call)["body"] if call else reply.body
    return str(body.get("version", "?"))


def _sample(send: Callable[[], Reply], consume: Callable[[Reply], bool]) -> int:
    """Send in rounds of PARALLEL until `consume` says the test decided; returns how many replies were used."""
    used = 0
    with ThreadPoolExecutor(PARALLEL) as pool:
        while True:
            for reply in pool.map(lambda _: send(), range(PARALLEL)):
                used += 1
                if consume(reply):
                    return used


def run_split(dp: DataPath, probe: SplitProbe) -> ProbeResult:
    client, url = _client(dp, probe.via, probe.host)
    test = SequentialSplit(probe.weights, deviation=probe.deviation)
    _sample(lambda: client.get(url(probe.path), probe.headers), lambda r: test.add(_version(r, probe.call)) is not None)
    ev = test.evidence()
    detail = "observed " + ", ".join(f"{k} {v}" for k, v in sorted(ev.observed.items()))
    detail += " vs expected " + ", ".join(f"{k} {v * ev.n:.0f}" for k, v in sorted(ev.expected.items()))
    return ProbeResult(
        name=probe.name, kind=probe.kind, ok=ev.ok, requests=ev.n, detail=detail.strip(), evidence=ev.to_dict()
    )


def run_fraction(dp: DataPath, probe: FractionProbe) -> ProbeResult:
    client, url = _client(dp, probe.via, probe.host)
    test = SequentialBinomial(probe.fraction, probe.deviation)
    statuses: dict[int, int] = {}

    def consume(reply: Reply) -> bool:
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
        return test.add(reply.status == probe.status) is not None

    _sample(lambda: client.get(url(probe.path), probe.headers), consume)
    ok = test.decision == "pass"
    evidence = {"n": test.n, "hits": test.hits, "expected_hits": round(test.expected_hits, 1), "statuses": statuses}
    detail = f"{test.hits}/{test.n} answered {probe.status}, expected {test.expected_hits:.0f}"
    return ProbeResult(name=probe.name, kind=probe.kind, ok=ok, requests=test.n, detail=detail, evidence=evidence)


def run_status(dp: DataPath, probe: StatusProbe) -> ProbeResult:
    client, url = _client(dp, probe.via, probe.host)
    reply = client.get(url(probe.path), probe.headers)
    ok = reply.status == probe.expect
    detail = f"answered {reply.status}, expected {probe.expect}"
    return ProbeResult(
        name=probe.name, kind=probe.kind, ok=ok, requests=1, detail=detail, evidence={"status": reply.status}
    )


def run_plaintext(dp: DataPath, probe: PlaintextRefusedProbe) -> ProbeResult:
    pods = dp.pods(probe.service)
    answered: dict[str, int] = {}
    for pod in pods:
        try:
            answered[pod] = dp.plaintext_to(pod).get("/").status
        except requests.RequestException:
            continue  # refused or reset: what STRICT mTLS does to plaintext
    ok = not any(status < 400 for status in answered.values())
    detail = f"{len(pods)} pod(s) refused plaintext" if ok else f"plaintext answered: {answered}"
    return ProbeResult(name=probe.name, kind=probe.kind, ok=ok, requests=len(pods), detail=detail, evidence=answered)


def run_denied(dp: DataPath, probe: DeniedProbe) -> ProbeResult:
    client, _ = _client(dp, f"pod:{probe.caller}", None)
    reply = client.get(probe.url)
    ok = reply.status == 403
    detail = f"{probe.caller} -> {probe.url} answered {reply.status}, expected 403"
    return ProbeResult(
        name=probe.name, kind=probe.kind, ok=ok, requests=1, detail=detail, evidence={"status": reply.status}
    )


def run_probe(dp: DataPath, probe: Probe) -> ProbeResult:
    t0 = time.perf_counter()
    try:
        if isinstance(probe, SplitProbe):
            result = run_split(dp, probe)
        elif isinstance(probe, FractionProbe):
            result = run_fraction(dp, probe)
        elif isinstance(probe, StatusProbe):
            result = run_status(dp, probe)
        elif isinstance(probe, PlaintextRefusedProbe):
            result = run_plaintext(dp, probe)
        else:
            result = run_denied(dp, probe)
    except (requests.RequestException, LookupError, AssertionError) as e:
        result = ProbeResult(name=probe.name, kind=probe.kind, ok=False, detail=f"{type(e).__name__}: {e}")
    return result.model_copy(update={"ms": (time.perf_counter() - t0) * 1000})


def verify(dp: DataPath, probes: Sequence[Probe], skipped: Sequence[str] = ()) -> Verification:
    t0 = time.perf_counter()
    results = [run_probe(dp, p) for p in probes]
    return Verification(
        ok=all(r.ok for r in results),
        results=results,
        skipped=list(skipped),
        requests=sum(r.requests for r in results),
        ms=(time.perf_counter() - t0) * 1000,
    )
