"""Type URLs, in the order Envoy wants them applied (clusters before their endpoints, listeners before routes)."""

from __future__ import annotations

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

ORDER: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
SHORT: Final = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS"}

# Envoy subscribes to these by name; CDS and LDS are wildcard.
BY_NAME: Final = frozenset({ENDPOINT, ROUTE, SECRET})

# A response of a parent type re-creates children that Envoy then re-requests with an unchanged version.
PARENTS: Final = {ENDPOINT: (CLUSTER,), ROUTE: (LISTENER,), SECRET: (CLUSTER, LISTENER)}
