"""Progressive delivery against the in-memory Target: steps advance to the goal, a bad canary stops and rolls back."""

from __future__ import annotations

from pathlib import Path

from mesh.gitops.reconciler import Reconciler, Settings
from mesh.gitops.source import SourceSpec
from mesh.gitops.state import StateStore
from tests.unit.verify.fakemesh import FakeTarget

from .gitrepo import PolicyRepo

ROLLOUT = """

from mesh.gitops.rollout import Rollout


def rollouts(env):
    return [Rollout(service="reviews", stable="v1", canary="v3", steps=[10, 25, 50, 100], min_success_rate=0.95)]
"""


def setup(tmp_path: Path, target: FakeTarget) -> tuple[PolicyRepo, Reconciler]:
    repo = PolicyRepo.create(tmp_path)
    init = repo.work / "policies" / "__init__.py"
    init.write_text(init.read_text() + ROLLOUT)
    repo.set_dev_weight(0)
    spec = SourceSpec(env="dev", repo=str(repo.origin), path="policies")
    return repo, Reconciler(spec, target, StateStore(tmp_path / "s.db"), tmp_path / "c", Settings())


def canary_weights(target: FakeTarget) -> list[int | None]:
    out = []
    for c in target.applies:
        vs = next(v for v in c.virtual_services if v.name == "reviews")
        out.append(next(d.weight for d in vs.http[-1].route if d.destination.subset == "v3"))
    return out


def test_a_staged_canary_advances_step_by_step_to_100(tmp_path: Path) -> None:
    target = FakeTarget()
    repo, r = setup(tmp_path, target)
    assert r.reconcile().action == "applied"
    sha = repo.set_dev_weight(100)
    result = r.reconcile()
    assert result.outcome == "applied", result.reason
    assert canary_weights(target) == [0, 10, 25, 50, 100]
    attempt = r.store.latest_attempt("dev", sha)
    assert attempt is not None
    steps = [e for e in attempt.evidence if "rollout" in e]
    assert [s["weight"] for s in steps] == [10, 25, 50, 100] and all(s["ok"] for s in steps)


def test_a_bad_canary_rolls_back_at_its_first_failing_step(tmp_path: Path) -> None:
    target = FakeTarget()
    repo, r = setup(tmp_path, target)
    r.reconcile()
    target.broken = {"v3"}  # the candidate answers 500
    sha = repo.set_dev_weight(100)
    result = r.reconcile()
    assert result.outcome == "rolled back" and "canary failed at 10%" in result.reason, result.reason
    assert canary_weights(target) == [0, 10, 0]
    attempt = r.store.latest_attempt("dev", sha)
    assert attempt is not None
    step = next(e for e in attempt.evidence if "rollout" in e)
    assert step["weight"] == 10 and not step["ok"] and step["canary_success_rate"] == 0.0


def test_the_p99_of_envoy_buckets_is_taken_from_the_delta_and_interpolated() -> None:
    from mesh.gitops.rollout import quantile

    before = [(10.0, 5), (25.0, 5), (50.0, 5), (100.0, 5)]  # 5 old samples, all under 10 ms: not this step's
    after = [(10.0, 55), (25.0, 104), (50.0, 105), (100.0, 105)]  # 50 <= 10 ms, 49 in (10, 25], 1 in (25, 50]
    p99, n = quantile(before, after, 0.99)
    assert n == 100
    assert p99 is not None and 10 < p99 <= 25  # rank 99 of 100 falls in (10, 25]
    assert quantile(before, before, 0.99) == (None, 0)  # no sample in the step: no latency, not 0 ms
