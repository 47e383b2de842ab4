"""The dashboard's reconcile history, read from the reconciler's own state by the CLI (observability sits below
gitops, so the command passes it in)."""

from __future__ import annotations

from pathlib import Path

from mesh.cli.observe import reconcile_history


def test_reconcile_history_reads_the_reconcilers_attempts(tmp_path: Path) -> None:
    from mesh.gitops.state import StateStore

    db = tmp_path / "gitops" / "state.db"
    assert reconcile_history(db)() == []  # no reconciler yet
    db.parent.mkdir()
    store = StateStore(db)
    attempt = store.start_attempt("dev", "0123456789abcdef", "main", "canary 10%")
    store.finish_attempt(attempt, "applied")
    store.close()
    [row] = reconcile_history(db)()
    assert (row["env"], row["commit"], row["outcome"]) == ("dev", "0123456789", "applied")
