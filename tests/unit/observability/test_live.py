"""Weighted routes are read from what a proxy runs (its RDS config dump), in both dump shapes Envoy gives."""

from __future__ import annotations

from pathlib import Path

from mesh.observability.live import reconcile_history, weighted_routes

ROUTE = {
    "name": "80",
    "virtual_hosts": [
        {
            "name": "reviews.default.svc.cluster.local:9080",
            "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "outbound|9080||details.default.svc.cluster.local"}},
                {
                    "name": "split",
                    "route": {
                        "weighted_clusters": {
                            "clusters": [
                                {"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "weight": 90},
                                {"name": "outbound|9080|v3|reviews.default.svc.cluster.local", "weight": 10},
                            ]
                        }
                    },
                },
            ],
        }
    ],
}


def test_weighted_routes_from_a_whole_dump_and_a_resource_dump() -> None:
    whole = {"configs": [{"dynamic_route_configs": [{"route_config": ROUTE}]}]}
    direct = {"configs": [{"route_config": ROUTE}]}
    for dump in (whole, direct):
        [r] = weighted_routes(dump)
        assert r.service == "reviews.default.svc.cluster.local"
        assert r.weights == {"v1": 90, "v3": 10}
        assert r.name.endswith("#split")


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
