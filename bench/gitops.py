"""GitOps: git push -> config serving on every proxy, and git push -> verified on the data path.

Push -> applied (every proxy ACKed, nothing warming) via the post-receive hook, the GitHub webhook and polling at
the default interval, p50/p99 over >= 30 pushes each (polling: BENCH_GITOPS_POLL_PUSHES, default 30, ~4 min);
push -> verified (derived checks green) via the hook. Baseline: a direct apply of the same change in the same run.
Then how many requests a sequential 90/10 and 50/50 verification take on average (false failure <= 1e-6, power
>= 0.99 against 5 points), simulated with a seeded RNG, next to the fixed-sample size with the same guarantees.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import median, pct, row
from mesh.compile import build_policies
from mesh.gitops.daemon import DEFAULT_POLL, Daemon, DaemonSettings
from mesh.gitops.reconciler import Reconciler, Settings
from mesh.gitops.source import SourceSpec
from mesh.gitops.state import StateStore
from mesh.gitops.triggers import WebhookConfig, install_hook
from mesh.verify.stats import SequentialSplit, required_sample_size
from tests.unit.gitops.gitrepo import PolicyRepo

PUSHES = int(os.environ.get("BENCH_GITOPS_PUSHES", "30"))
SECRET = b"bench"


def _wait_applied(store: StateStore, sha: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while store.env("dev").last_applied != sha:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sha[:12]} not applied within {timeout:.0f}s")
        time.sleep(0.002)


def _pushes(repo: PolicyRepo, store: StateStore, n: int, notify: Any = None) -> list[float]:
    times = []
    for i in range(n):
        weight = 10 + (i % 2) * 10
        sha = repo.set_dev_weight(weight)  # returns after `git push` (the hook has run)
        t0 = time.perf_counter()
        if notify is not None:
            notify(i)
        _wait_applied(store, sha)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _daemon(target: Any, repo: PolicyRepo, root: Path, *, verify: bool, poll: float, **settings: Any) -> Daemon:
    spec = SourceSpec(env="dev", repo=str(repo.origin), path="policies")
    store = StateStore(root / "state.db")
    r = Reconciler(spec, target, store, root / "cache", Settings(verify=verify))
    return Daemon([r], DaemonSettings(poll=poll, **settings))


def _measure(
    target: Any, tmp: Path, name: str, *, verify: bool, poll: float, n: int, webhook: bool = False
) -> list[float]:
    root = tmp / name
    root.mkdir(parents=True)
    repo = PolicyRepo.create(root)
    sock = root / "hook.sock"
    if not webhook and poll > 60:
        install_hook(repo.origin, sock)
    cfg = WebhookConfig(secret=SECRET, envs={"dev": "main"}) if webhook else None
    daemon = _daemon(
        target,
        repo,
        root,
        verify=verify,
        poll=poll,
        hook_socket=sock,
        listen=("127.0.0.1", 0) if webhook else None,
        webhook=cfg,
    )
    daemon.start()
    store = daemon.reconcilers["dev"].store
    try:
        while daemon.cycles["dev"] < 1:
            time.sleep(0.01)
        notify = None
        if webhook:
            host, port = daemon.address or ("", 0)
            body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/policies"}}).encode()
            sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()

            def notify(i: int) -> None:
                h = {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": f"{name}-{i}", "X-GitHub-Event": "push"}
                requests.post(f"http://{host}:{port}/webhook", data=body, headers=h, timeout=5)

        return _pushes(repo, store, n, notify)
    finally:
        daemon.shutdown()


def _baseline(target: Any, n: int) -> list[float]:
    from mesh.api import helpers as h
    from tests.e2e.conftest import replace

    base = target.live_config()
    times = []
    for i in range(n):
        vs = h.header_ab(
            "reviews",
            header="end-user",
            value="jason",
            match_subset="v2",
            default=h.split("reviews", {"v1": 90 - (i % 2) * 10, "v3": 10 + (i % 2) * 10}, name="canary"),
        )
        t0 = time.perf_counter()
        target.apply(replace(base, vs))
        times.append((time.perf_counter() - t0) * 1000)
    return times


def verification_sizes() -> None:
    rng = random.Random(2026)
    for weights in ({"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}):
        ns = []
        for _ in range(300):
            test = SequentialSplit(weights)
            p = weights["v1"] / 100
            while test.add("v1" if rng.random() < p else "v2") is None:
                pass
            ns.append(test.n)
        fixed = required_sample_size(weights["v1"] / 100, 0.05, 1e-6, 0.01)
        label = f"{weights['v1']}/{weights['v2']}"
        print(
            f"  {label} verification: mean {sum(ns) / len(ns):.0f} requests (p99 {pct([float(x) for x in ns], 99):.0f}), "
            f"fixed-sample exact test with the same guarantees: {fixed}",
            flush=True,
        )


def main() -> None:
    verification_sizes()
    from mesh.harness.under_test import LocalMeshUnderTest  # the Target-based harness

    under_test = LocalMeshUnderTest(build_policies("dev", "policies"))
    target = under_test.target
    poll_pushes = int(os.environ.get("BENCH_GITOPS_POLL_PUSHES", PUSHES))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gitops-") as tmp:
            base = _baseline(target, PUSHES)
            hook = _measure(target, Path(tmp), "hook", verify=False, poll=3600, n=PUSHES)
            webhook = _measure(target, Path(tmp), "webhook", verify=False, poll=3600, n=PUSHES, webhook=True)
            verified = _measure(target, Path(tmp), "verified", verify=True, poll=3600, n=PUSHES)
            polled = _measure(target, Path(tmp), "poll", verify=False, poll=DEFAULT_POLL, n=poll_pushes)
    finally:
        under_test.stop()
    b = median(base)
    print(f"  {PUSHES} pushes each (polling: {poll_pushes}); baseline: direct apply of the same change", flush=True)
    row("push -> applied on every proxy (hook), p50", median(hook), b, "ms")
    row("push -> applied on every proxy (hook), p99", pct(hook, 99), b, "ms", "goal p99 <= 500 ms")
    row("push -> applied (webhook), p50", median(webhook), b, "ms")
    row("push -> applied (webhook), p99", pct(webhook, 99), b, "ms", "goal p99 <= 500 ms")
    row(f"push -> applied (polling {DEFAULT_POLL:g}s), p50", median(polled), b, "ms")
    row(f"push -> applied (polling {DEFAULT_POLL:g}s), p99", pct(polled, 99), b, "ms")
    row("push -> verified on the data path (hook), p50", median(verified), b, "ms")
    row("push -> verified on the data path (hook), p99", pct(verified, 99), b, "ms", "goal <= 5000 ms")
