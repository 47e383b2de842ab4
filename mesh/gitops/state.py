"""Durable reconciler state in SQLite (stdlib, WAL): it survives restarts and crashes mid-apply.

Per environment: the last applied and last attempted commit, the config that was last applied (what a rollback or
a drift check compares with), conditions, and since when a transient fault persists. Per attempt of a commit: the
outcome, per-phase timings, the diff, findings and evidence.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal[
    "applying",
    "applied",
    "failed analysis",
    "failed render",
    "failed signature",
    "failed verification",
    "rolled back",
    "superseded",
    "failed apply",
    "interrupted",
]
FAILED: tuple[Outcome, ...] = (
    "failed analysis",
    "failed render",
    "failed signature",
    "failed verification",
    "rolled back",
    "failed apply",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS environments (
    env TEXT PRIMARY KEY,
    last_applied TEXT, last_attempted TEXT,
    applied_config TEXT, applied_at REAL,
    transient_error TEXT, transient_since REAL,
    drift TEXT, updated REAL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    env TEXT NOT NULL, sha TEXT NOT NULL, ref TEXT, message TEXT,
    outcome TEXT NOT NULL, reason TEXT,
    started REAL NOT NULL, finished REAL,
    phases TEXT, diff TEXT, findings TEXT, evidence TEXT, retry INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS attempts_env_sha ON attempts(env, sha);
"""


class Attempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    env: str
    sha: str
    ref: str = ""
    message: str = ""
    outcome: Outcome
    reason: str = ""
    started: float
    finished: float | None = None
    phases: dict[str, float] = Field(default_factory=dict)  # phase -> ms
    diff: list[dict[str, str]] = Field(default_factory=list)
    findings: list[dict[str, Any]] = Field(default_factory=list)
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    retry: bool = False


class EnvState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    env: str
    last_applied: str | None = None
    last_attempted: str | None = None
    applied_config: str | None = None  # JSON of the rendered config (services + manifests)
    applied_at: float | None = None
    transient_error: str | None = None
    transient_since: float | None = None
    drift: str | None = None
    updated: float | None = None


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def env(self, env: str) -> EnvState:
        row = self.db.execute("SELECT * FROM environments WHERE env = ?", (env,)).fetchone()
        return EnvState.model_validate(dict(row)) if row else EnvState(env=env)

    def environments(self) -> list[EnvState]:
        return [EnvState.model_validate(dict(r)) for r in self.db.execute("SELECT * FROM environments ORDER BY env")]

    def update_env(self, env: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        unknown = set(fields) - set(EnvState.model_fields)
        if unknown:
            raise ValueError(f"unknown environment fields: {sorted(unknown)}")
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO environments(env) VALUES (?)", (env,))
            sets = ", ".join(f"{k} = ?" for k in fields)
            db.execute(f"UPDATE environments SET {sets} WHERE env = ?", (*fields.values(), env))

    def start_attempt(self, env: str, sha: str, ref: str, message: str, *, retry: bool = False) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO attempts(env, sha, ref, message, outcome, started, retry) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (env, sha, ref, message, "applying", time.time(), int(retry)),
            )
            db.execute("INSERT OR IGNORE INTO environments(env) VALUES (?)", (env,))
            db.execute("UPDATE environments SET last_attempted = ?, updated = ? WHERE env = ?", (sha, time.time(), env))
            return int(cur.lastrowid or 0)

    def finish_attempt(
        self,
        attempt_id: int,
        outcome: Outcome,
        reason: str = "",
        *,
        phases: dict[str, float] | None = None,
        diff: list[dict[str, str]] | None = None,
        findings: list[dict[str, Any]] | None = None,
        evidence: list[dict[str, Any]] | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET outcome = ?, reason = ?, finished = ?, phases = ?, diff = ?, findings = ?,"
                " evidence = ? WHERE id = ?",
                (
                    outcome,
                    reason,
                    time.time(),
                    json.dumps(phases or {}),
                    json.dumps(diff or []),
                    json.dumps(findings or []),
                    json.dumps(evidence or [], default=str),
                    attempt_id,
                ),
            )

    def record_applied(self, env: str, sha: str, config_json: str) -> None:
        self.update_env(env, last_applied=sha, applied_config=config_json, applied_at=time.time(), drift=None)

    def attempts(self, env: str | None = None, limit: int = 50) -> list[Attempt]:
        q = "SELECT * FROM attempts" + (" WHERE env = ?" if env else "") + " ORDER BY id DESC LIMIT ?"
        rows = self.db.execute(q, (env, limit) if env else (limit,)).fetchall()
        return [_attempt(r) for r in rows]

    def latest_attempt(self, env: str, sha: str) -> Attempt | None:
        row = self.db.execute(
            "SELECT * FROM attempts WHERE env = ? AND sha = ? ORDER BY id DESC LIMIT 1", (env, sha)
        ).fetchone()
        return _attempt(row) if row else None

    def interrupted(self, env: str) -> list[Attempt]:
        """Attempts a killed reconciler left `applying`: on restart they are superseded by a fresh reconcile."""
        rows = self.db.execute("SELECT * FROM attempts WHERE env = ? AND outcome = 'applying'", (env,)).fetchall()
        return [_attempt(r) for r in rows]


def _attempt(row: sqlite3.Row) -> Attempt:
    d = dict(row)
    for k in ("phases", "findings", "evidence", "diff"):
        d[k] = json.loads(d[k]) if d[k] else ({} if k == "phases" else [])
    d["retry"] = bool(d["retry"])
    d["reason"] = d["reason"] or ""
    d["ref"] = d["ref"] or ""
    d["message"] = d["message"] or ""
    return Attempt.model_validate(d)
