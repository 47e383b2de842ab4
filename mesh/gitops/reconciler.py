"""The reconcile loop for one environment: fetch -> render -> analyze -> diff -> apply -> verify -> record.

It speaks only the Target protocol. A commit that fails analysis is never applied; one that fails verification is
rolled back to the last good commit's config and never retried blindly (`mesh reconcile retry SHA` does, by hand).
When the commit is already applied, the cycle checks for drift (someone ran `mesh apply -f`) and heals it unless
told only to report. Transient faults retry with backoff and the status says since when; the last applied config
keeps serving. One reconcile at a time per environment (a file lock), and what a killed reconciler left `applying`
is superseded by the next cycle, which converges from the durable state.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from mesh.analyze import analyze, errors
from mesh.api.config import MeshConfig
from mesh.compile.diff import diff_configs
from mesh.errors import (
    AnalysisFailed,
    PolicyError,
    PushRejected,
    RenderFailed,
    SourceError,
    TargetError,
    TransientError,
)
from mesh.gitops.github import GitHubStatus
from mesh.gitops.github import State as GitHubState
from mesh.gitops.metrics import Metrics
from mesh.gitops.render import Limits, config_from_json, config_to_json, keep_workloads, render
from mesh.gitops.rollout import Rollout, advance, final_weight
from mesh.gitops.source import GitSource, Revision, SourceSpec
from mesh.gitops.state import FAILED, Outcome, StateStore
from mesh.targets.base import Target
from mesh.verify.derive import derive
from mesh.verify.run import Verification, verify

Progress = Callable[[str], None]


@dataclass
class Settings:
    heal: bool = True
    verify: bool = True
    limits: Limits = field(default_factory=Limits)
    attempts: int = 4  # transient retries per cycle (tenacity), exponential backoff
    backoff_max: float = 5.0
    github: GitHubStatus | None = None
    apply_wait: float = 10.0
    keyring: Path | None = None  # a GNUPGHOME: apply only commits whose signature verifies against it
    fork_sandbox: bool = True  # render in a child of the pre-started fork server; False: a fresh interpreter each time


class Result(BaseModel):
    """What one reconcile did, for the CLI and the daemon's progress lines."""

    model_config = ConfigDict(extra="forbid")

    env: str
    sha: str | None = None
    action: str  # applied | unchanged | healed | drift | failed | skipped | transient
    outcome: Outcome | None = None
    reason: str = ""
    diff: list[dict[str, str]] = []
    seconds: float = 0.0


def _capabilities(name: str) -> Any:
    from mesh.errors import UnknownTarget
    from mesh.targets import capabilities

    try:
        return capabilities(name)
    except (KeyError, ValueError, UnknownTarget):
        return None


def _policies_only(cfg: MeshConfig) -> MeshConfig:
    return MeshConfig(services=[], resources=list(cfg.resources))


class Reconciler:
    def __init__(
        self,
        spec: SourceSpec,
        target: Target,
        store: StateStore,
        cache_dir: Path,
        settings: Settings | None = None,
        progress: Progress | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.spec = spec
        self.env = spec.env
        self.target = target
        self.store = store
        self.source = GitSource(spec, cache_dir)
        self.settings = settings or Settings()
        self.progress = progress or (lambda _: None)
        self.metrics = metrics or Metrics()
        self.lock_path = cache_dir / "locks" / f"{spec.env}.lock"

    # --- plumbing -------------------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One reconcile at a time per environment, across threads and processes."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        wrapped = retry(
            retry=retry_if_exception_type((TransientError, TargetError)),
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait_exponential(multiplier=0.2, max=self.settings.backoff_max),
            reraise=True,
            before_sleep=lambda rs: self._transient(str(rs.outcome.exception()) if rs.outcome else "?"),
        )(fn)
        return wrapped()

    def _transient(self, error: str) -> None:
        state = self.store.env(self.env)
        since = state.transient_since or time.time()
        self.store.update_env(self.env, transient_error=error, transient_since=since)
        self.progress(f"{self.env}: transient fault (retrying with backoff): {error}")

    def _clear_transient(self) -> None:
        if self.store.env(self.env).transient_error:
            self.store.update_env(self.env, transient_error=None, transient_since=None)

    def _github(self, sha: str, outcome: Outcome | str, description: str) -> None:
        gh = self.settings.github
        if gh is None:
            return
        state: GitHubState = "success" if outcome == "applied" else "pending" if outcome == "applying" else "failure"
        err = gh.post(sha, state, description, self.env)
        if err:
            self.progress(f"{self.env}: {err}")

    # --- the loop -------------------------------------------------------------------------------------

    def reconcile(self, *, retry_sha: str | None = None) -> Result:
        t0 = time.perf_counter()
        with self.locked():
            try:
                result = self._reconcile(retry_sha)
                self._clear_transient()
            except (TransientError, TargetError) as e:
                self._transient(str(e).splitlines()[0])
                result = Result(env=self.env, action="transient", reason=str(e).splitlines()[0])
        result.seconds = time.perf_counter() - t0
        self.metrics.reconciled(self.env, result.outcome or result.action, result.seconds)
        return result

    def _reconcile(self, retry_sha: str | None) -> Result:
        for stale in self.store.interrupted(self.env):
            self.store.finish_attempt(stale.id, "interrupted", "the reconciler stopped mid-apply; reconciling again")
        revision: Revision = self._retrying(self.source.fetch)
        sha = retry_sha or revision.sha
        if retry_sha and not self.source.has_commit(retry_sha):
            raise SourceError(f"commit {retry_sha} is not in the fetched history of {self.spec.ref}")
        state = self.store.env(self.env)
        if not retry_sha:
            if sha == state.last_applied:
                return self._drift(sha)
            previous = self.store.latest_attempt(self.env, sha)
            if previous is not None and previous.outcome in FAILED:
                drift = self._drift(state.last_applied) if state.last_applied else None
                reason = f"{sha[:12]} {previous.outcome}: {previous.reason}; waiting for a new commit"
                action = drift.action if drift and drift.action != "unchanged" else "skipped"
                return Result(env=self.env, sha=sha, action=action, reason=reason)
        return self._attempt(sha, revision, retry=bool(retry_sha))

    def desired_last_good(self) -> MeshConfig | None:
        state = self.store.env(self.env)
        return config_from_json(state.applied_config) if state.applied_config else None

    def _drift(self, sha: str | None) -> Result:
        desired = self.desired_last_good()
        if desired is None or sha is None:
            return Result(env=self.env, sha=sha, action="unchanged")
        live = self._retrying(self.target.live_config)
        changes = diff_configs(_policies_only(live), _policies_only(desired))
        if not changes:
            if self.store.env(self.env).drift:
                self.store.update_env(self.env, drift=None)
            return Result(env=self.env, sha=sha, action="unchanged")
        summary = ", ".join(f"{c.op}{c.ref}" for c in changes)
        diff = [c.to_dict() for c in changes]
        if not self.settings.heal:
            self.store.update_env(self.env, drift=summary)
            self.progress(f"{self.env}: drift from {sha[:12]} (not healed, --no-heal): {summary}")
            return Result(env=self.env, sha=sha, action="drift", reason=summary, diff=diff)
        self.progress(f"{self.env}: drift from {sha[:12]}: {summary}; healing")
        self._retrying(lambda: self.target.apply(desired, wait=self.settings.apply_wait))
        self.store.update_env(self.env, drift=None)
        return Result(env=self.env, sha=sha, action="healed", reason=summary, diff=diff)

    def _attempt(self, sha: str, revision: Revision, *, retry: bool) -> Result:
        msg = revision.message if sha == revision.sha else ""
        attempt = self.store.start_attempt(self.env, sha, revision.ref, msg.splitlines()[0] if msg else "", retry=retry)
        phases: dict[str, float] = {}
        self._github(sha, "applying", "reconciling")

        def finish(outcome: Outcome, reason: str = "", **extra: Any) -> Result:
            self.store.finish_attempt(attempt, outcome, reason, phases=phases, **extra)
            self._github(sha, outcome, reason or outcome)
            self.progress(f"{self.env}: {sha[:12]} {outcome}" + (f": {reason}" if reason else ""))
            action = "applied" if outcome == "applied" else "failed"
            return Result(
                env=self.env, sha=sha, action=action, outcome=outcome, reason=reason, diff=extra.get("diff", [])
            )

        def timed(phase: str, fn: Callable[[], Any]) -> Any:
            t = time.perf_counter()
            try:
                return fn()
            finally:
                phases[phase] = round((time.perf_counter() - t) * 1000, 1)

        self.progress(f"{self.env}: reconciling {sha[:12]} ({revision.ref}) {msg.splitlines()[0] if msg else ''}")
        if self.settings.keyring is not None:
            keyring = self.settings.keyring
            unsigned = timed("signature", lambda: self.source.verify_signature(sha, keyring))
            if unsigned:
                return finish("failed signature", unsigned)
        try:
            root = timed("fetch", lambda: self.source.materialise(sha))
            rendered = timed(
                "render", lambda: render(root, ".", self.env, self.settings.limits, fork=self.settings.fork_sandbox)
            )
        except (RenderFailed, SourceError) as e:
            return finish("failed render", str(e))
        live = self._retrying(self.target.live_config)
        config = keep_workloads(rendered.config, live)
        findings = timed("analyze", lambda: analyze(config, _capabilities(self.target.name)))
        found = [{"code": f.code, "level": f.level, "message": str(f)} for f in findings]
        if errors(findings):
            first = errors(findings)[0]
            return finish("failed analysis", f"[{first.code}] {first.message}", findings=found)
        changes = [c.to_dict() for c in diff_configs(live, config)]
        last_good = self.desired_last_good() or live
        rollouts = [r for r in rendered.rollouts if self._needs_steps(r, live, config)]
        steps: list[dict[str, Any]] = []
        try:
            if rollouts:
                evidence, ok = timed("rollout", lambda: self._progressive(rollouts, live, config))
                steps = evidence
                if not ok:
                    timed("rollback", lambda: self.target.apply(last_good, wait=self.settings.apply_wait))
                    failing: dict[str, Any] = next((e for e in evidence if not e.get("ok", True)), {})
                    reason = f"canary failed at {failing.get('weight')}%: {failing.get('detail', '')}"
                    return finish("rolled back", reason, diff=changes, findings=found, evidence=evidence)
            else:
                timed("apply", lambda: self._retrying(lambda: self.target.apply(config, wait=self.settings.apply_wait)))
        except AnalysisFailed as e:
            return finish("failed analysis", str(e).splitlines()[0], findings=found)
        except PushRejected as e:
            return finish("failed apply", str(e).splitlines()[0], diff=changes, findings=found)
        except (TargetError, TransientError):
            self.store.finish_attempt(attempt, "interrupted", "target unreachable", phases=phases)
            raise
        verification = timed("verify", lambda: self._verify(config, rendered.probes))
        evidence_rows = steps + ([r.model_dump() for r in verification.results] if verification else [])
        if verification is not None and not verification.ok:
            self.progress(f"{self.env}: verification failed: {verification.summary()}; rolling back")
            timed(
                "rollback", lambda: self._retrying(lambda: self.target.apply(last_good, wait=self.settings.apply_wait))
            )
            return finish(
                "rolled back",
                f"verification failed: {verification.summary()}",
                diff=changes,
                findings=found,
                evidence=evidence_rows,
            )
        self.store.record_applied(self.env, sha, config_to_json(config))
        self.metrics.applied(self.env, time.time())
        detail = verification.summary() if verification else "applied (verification off)"
        return finish("applied", detail, diff=changes, findings=found, evidence=evidence_rows)

    def _verify(self, config: MeshConfig, declared: list[Any]) -> Verification | None:
        if not self.settings.verify:
            return None
        derived = derive(config)
        return verify(self.target.data_path(), [*derived.probes, *declared], derived.skipped)

    @staticmethod
    def _needs_steps(rollout: Rollout, live: MeshConfig, config: MeshConfig) -> bool:
        before, after = final_weight(live, rollout), final_weight(config, rollout)
        return after is not None and before is not None and after > before

    def _progressive(
        self, rollouts: list[Rollout], live: MeshConfig, config: MeshConfig
    ) -> tuple[list[dict[str, Any]], bool]:
        evidence: list[dict[str, Any]] = []
        dp = self.target.data_path()
        current = live
        for rollout in rollouts:
            start = final_weight(live, rollout) or 0
            caller = rollout.caller or _first_caller(config, rollout.service)
            steps = advance(
                rollout,
                config,
                start,
                lambda c: self.target.apply(keep_workloads(c, current)),
                dp,
                caller,
                self.progress,
            )
            evidence += [{"rollout": rollout.service, **s.model_dump()} for s in steps]
            if not steps or not steps[-1].ok:
                return evidence, False
        self.target.apply(config, wait=self.settings.apply_wait)
        return evidence, True


def _first_caller(config: MeshConfig, service: str) -> str:
    from mesh.verify.derive import _caller_for, service_for

    target = service_for(config, service)
    caller = _caller_for(config, target)
    if caller is None:
        raise PolicyError(f"no service may call {service} to check its canary", hint="set Rollout(caller=...)")
    return caller.name
