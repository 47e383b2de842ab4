"""Weighted routes are read from what a proxy runs (its RDS config dump), in both dump shapes Envoy gives."""

from __future__ import annotations

from mesh.observability.live import weighted_routes

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
