"""The reconcile loop against a real git repository and an in-memory Target (the e2e suite uses real Envoy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.api import helpers as h
from mesh.gitops.reconciler import Reconciler, Settings
from mesh.gitops.render import Limits
from mesh.gitops.source import SourceSpec
from mesh.gitops.state import StateStore
from tests.unit.verify.fakemesh import FakeTarget

from .gitrepo import PolicyRepo


@pytest.fixture
def repo(tmp_path: Path) -> PolicyRepo:
    return PolicyRepo.create(tmp_path)


def reconciler(repo: PolicyRepo, target: FakeTarget, tmp_path: Path, **settings: object) -> Reconciler:
    spec = SourceSpec(env="dev", repo=str(repo.origin), ref="main", path="policies")
    store = StateStore(tmp_path / "state" / "state.db")
    s = Settings(limits=Limits(timeout=30), attempts=2, backoff_max=0.05, **settings)  # type: ignore[arg-type]
    return Reconciler(spec, target, store, tmp_path / "cache", s)


def reviews_weights(target: FakeTarget) -> dict[str | None, int | None]:
    vs = next(v for v in target.config.virtual_services if v.name == "reviews")
    return {d.destination.subset: d.weight for d in vs.http[-1].route}


def test_a_push_is_applied_verified_and_recorded(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget()
    r = reconciler(repo, target, tmp_path)
    first = r.reconcile()
    assert first.action == "applied", first.reason
    assert reviews_weights(target) == {"v1": 50, "v3": 50}
    sha = repo.set_dev_weight(20)
    second = r.reconcile()
    assert (second.action, second.sha) == ("applied", sha)
    assert reviews_weights(target) == {"v1": 80, "v3": 20}
    state = r.store.env("dev")
    assert state.last_applied == state.last_attempted == sha
    attempt = r.store.latest_attempt("dev", sha)
    assert attempt is not None and attempt.outcome == "applied"
    assert {"render", "analyze", "apply", "verify"} <= set(attempt.phases)
    assert any(e["kind"] == "split" and e["ok"] for e in attempt.evidence)
    assert r.reconcile().action == "unchanged"


def test_analysis_errors_apply_nothing(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget()
    r = reconciler(repo, target, tmp_path)
    r.reconcile()
    applies = len(target.applies)
    init = repo.work / "policies" / "__init__.py"
    init.write_text(init.read_text().replace('{"v1": 100 - weight', '{"v4": 100 - weight'))
    sha = repo.commit("route to a subset that does not exist")
    result = r.reconcile()
    assert result.outcome == "failed analysis" and "IST0101" in result.reason
    assert len(target.applies) == applies
    assert r.store.env("dev").last_attempted == sha
    assert r.reconcile().action == "skipped"  # never retried blindly


def test_failed_verification_rolls_back_and_is_not_retried(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget(broken={"v3"})
    r = reconciler(repo, target, tmp_path)
    repo.set_dev_weight(0)
    assert r.reconcile().action == "applied"
    sha = repo.set_dev_weight(30)
    result = r.reconcile()
    assert result.outcome == "rolled back", result.reason
    assert "status 500" in result.reason
    assert reviews_weights(target) == {"v1": 100, "v3": 0}
    assert r.store.env("dev").last_applied != sha
    assert r.reconcile().action == "skipped"
    target.broken = set()
    assert r.reconcile(retry_sha=sha).outcome == "applied"


def test_a_module_that_loops_forever_fails_by_time_limit(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget()
    r = reconciler(repo, target, tmp_path)
    r.settings.limits = Limits(timeout=3)
    repo.write("policies/__init__.py", "while True:\n    pass\n")
    repo.commit("oops")
    result = r.reconcile()
    assert result.outcome == "failed render" and "did not finish within 3s" in result.reason


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ("raise RuntimeError('boom')", "RuntimeError: boom"),
        ("import os\nos._exit(4)", "exited with status 4"),
        ("x = bytearray(4 << 30)", "memory"),
    ],
)
def test_a_module_that_raises_exits_or_exhausts_memory_fails_with_the_cause(
    repo: PolicyRepo, tmp_path: Path, code: str, cause: str
) -> None:
    r = reconciler(repo, FakeTarget(), tmp_path)
    repo.write("policies/__init__.py", code + "\n")
    repo.commit("bad module")
    result = r.reconcile()
    assert result.outcome == "failed render" and cause in result.reason, result.reason


def test_the_sandbox_does_not_see_the_reconcilers_secrets(
    repo: PolicyRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHOPS_WEBHOOK_SECRET", "hunter2")
    r = reconciler(repo, FakeTarget(), tmp_path)
    repo.write("policies/__init__.py", "import os\nraise RuntimeError(sorted(os.environ))\n")
    repo.commit("leak?")
    result = r.reconcile()
    assert "RuntimeError" in result.reason and "MESHOPS_WEBHOOK_SECRET" not in result.reason


def test_drift_is_healed_or_only_reported(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget()
    r = reconciler(repo, target, tmp_path)
    r.reconcile()
    live = target.live_config()
    live.resources = [x for x in live.resources if x.name != "reviews" or x.kind != "VirtualService"]
    live.add(h.canary("reviews", stable="v1", candidate="v3", weight=90))
    target.config = live  # someone ran `mesh apply -f` by hand
    r.settings.heal = False
    reported = r.reconcile()
    assert reported.action == "drift" and "VirtualService default/reviews" in reported.reason
    assert r.store.env("dev").drift
    r.settings.heal = True
    assert r.reconcile().action == "healed"
    assert reviews_weights(target) == {"v1": 50, "v3": 50}
    assert r.store.env("dev").drift is None


def test_deleted_policies_are_pruned(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget()
    r = reconciler(repo, target, tmp_path)
    r.reconcile()
    assert any(x.kind == "AuthorizationPolicy" for x in target.config.resources)
    init = repo.work / "policies" / "__init__.py"
    text = init.read_text()
    assert "allow_only_from" in text
    init.write_text("\n".join(line for line in text.splitlines() if "allow_only_from" not in line) + "\n")
    repo.commit("drop the ratings authorization policy")
    target.denied = {("reviews", "details")}  # the fake's RBAC is static: ratings is open now
    result = r.reconcile()
    assert result.action == "applied", result.reason
    assert any(c["op"] == "-" and "AuthorizationPolicy" in c["ref"] for c in result.diff)
    assert not any(x.name.endswith("allow-callers") for x in target.config.resources)


def test_unreachable_target_is_transient_with_since_and_recovers(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget()
    r = reconciler(repo, target, tmp_path)
    target.unreachable = True
    result = r.reconcile()
    assert result.action == "transient"
    since = r.store.env("dev").transient_since
    assert since is not None
    assert r.reconcile().action == "transient"
    assert r.store.env("dev").transient_since == since
    target.unreachable = False
    assert r.reconcile().action == "applied"
    assert r.store.env("dev").transient_since is None


def test_an_interrupted_apply_converges_on_restart(repo: PolicyRepo, tmp_path: Path) -> None:
    target = FakeTarget()
    r = reconciler(repo, target, tmp_path)
    target.fail_next_apply = KeyboardInterrupt()  # the process dies mid-apply
    with pytest.raises(KeyboardInterrupt):
        r.reconcile()
    assert r.store.interrupted("dev")
    restarted = reconciler(repo, target, tmp_path)
    assert restarted.reconcile().action == "applied"
    assert not restarted.store.interrupted("dev")
    assert [a.outcome for a in restarted.store.attempts("dev")] == ["applied", "interrupted"]


def test_missing_ref_and_path_are_clear_errors(repo: PolicyRepo, tmp_path: Path) -> None:
    from mesh.errors import SourceError

    spec = SourceSpec(env="dev", repo=str(repo.origin), ref="nope", path="policies")
    r = Reconciler(spec, FakeTarget(), StateStore(tmp_path / "s.db"), tmp_path / "c")
    with pytest.raises(SourceError, match="ref 'nope' not found"):
        r.reconcile()
    spec = SourceSpec(env="dev", repo=str(repo.origin), ref="main", path="missing")
    r = Reconciler(spec, FakeTarget(), StateStore(tmp_path / "s2.db"), tmp_path / "c2")
    result = r.reconcile()
    assert result.outcome == "failed render" and "path 'missing' does not exist" in result.reason
