"""Type URLs, in the order Envoy wants them applied (clusters before their endpoints, listeners before routes)."""

from __future__ import annotations

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# VHDS: a route table's virtual hosts as their own resources, named `<route config name>/<host>`; delta xDS only.
VIRTUAL_HOST: Final = "type.googleapis.com/envoy.config.route.v3.VirtualHost"

ORDER: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST, SECRET)
SHORT: Final = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", VIRTUAL_HOST: "VHDS", SECRET: "SDS"}

# Envoy subscribes to these by name; CDS and LDS are wildcard.
BY_NAME: Final = frozenset({ENDPOINT, ROUTE, VIRTUAL_HOST, SECRET})

# Served on their own delta stream, never over state-of-the-world ADS.
DELTA_ONLY: Final = frozenset({VIRTUAL_HOST})

# A response of a parent type re-creates children that Envoy then re-requests with an unchanged version.
PARENTS: Final = {ENDPOINT: (CLUSTER,), ROUTE: (LISTENER,), VIRTUAL_HOST: (ROUTE,), SECRET: (CLUSTER, LISTENER)}
