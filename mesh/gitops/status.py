"""Flux-like conditions from the durable state: Ready, Reconciling, Stalled, each with a reason and a message."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mesh.gitops.state import FAILED, Attempt, EnvState, StateStore

_REASONS = {
    "failed analysis": "AnalysisFailed",
    "failed render": "RenderFailed",
    "failed signature": "SignatureInvalid",
    "failed verification": "VerificationFailed",
    "rolled back": "RolledBack",
    "failed apply": "ApplyRejected",
}


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["Ready", "Reconciling", "Stalled"]
    status: Literal["True", "False"]
    reason: str
    message: str


class EnvStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    env: str
    last_applied: str | None
    last_attempted: str | None
    applied_at: float | None
    transient_error: str | None
    transient_since: float | None
    drift: str | None
    conditions: list[Condition]


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def conditions(state: EnvState, latest: Attempt | None) -> list[Condition]:
    out: list[Condition] = []
    reconciling = latest is not None and latest.outcome == "applying"
    out.append(
        Condition(
            type="Reconciling",
            status="True" if reconciling else "False",
            reason="Progressing" if reconciling else "Idle",
            message=f"reconciling {_short(latest.sha)}" if reconciling and latest else "",
        )
    )
    failed = latest is not None and latest.outcome in FAILED and latest.sha != state.last_applied
    if state.transient_error:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.transient_since or 0))
        ready = Condition(
            type="Ready",
            status="False",
            reason="TransientFault",
            message=f"since {since}: {state.transient_error}; {_short(state.last_applied)} keeps serving",
        )
    elif failed and latest is not None:
        ready = Condition(
            type="Ready",
            status="False",
            reason=_REASONS.get(latest.outcome, "Failed"),
            message=f"{_short(latest.sha)} {latest.outcome}: {latest.reason}; {_short(state.last_applied)} serves",
        )
    elif state.drift:
        ready = Condition(type="Ready", status="False", reason="DriftDetected", message=state.drift)
    elif state.last_applied:
        ready = Condition(
            type="Ready", status="True", reason="Applied", message=f"Applied revision: {_short(state.last_applied)}"
        )
    else:
        ready = Condition(type="Ready", status="False", reason="Pending", message="nothing applied yet")
    out.insert(0, ready)
    out.append(
        Condition(
            type="Stalled",
            status="True" if failed else "False",
            reason=ready.reason if failed else "",
            message="waiting for a new commit (or `mesh reconcile retry SHA`)" if failed else "",
        )
    )
    return out


def env_status(store: StateStore, env: str) -> EnvStatus:
    state = store.env(env)
    attempts = store.attempts(env, limit=1)
    return EnvStatus(
        env=env,
        last_applied=state.last_applied,
        last_attempted=state.last_attempted,
        applied_at=state.applied_at,
        transient_error=state.transient_error,
        transient_since=state.transient_since,
        drift=state.drift,
        conditions=conditions(state, attempts[0] if attempts else None),
    )
