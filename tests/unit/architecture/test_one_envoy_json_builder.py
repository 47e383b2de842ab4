"""Static bootstrap clusters are built in one place (`mesh.envoyjson`): the xDS cluster, the admin-socket cluster,
the telemetry collector's and the test beds' upstreams were four hand-written copies that drifted apart."""

from __future__ import annotations

import re
from pathlib import Path

from mesh.envoyjson import pipe_address, socket_address, static_cluster

ROOT = Path(__file__).resolve().parents[3]


def test_no_module_spells_out_a_static_cluster_of_its_own() -> None:
    spelled = re.compile(r"""["']type["']\s*:\s*["']STATIC["']""")
    copies = [
        str(path.relative_to(ROOT))
        for tree in ("mesh", "bench", "tests")
        for path in (ROOT / tree).rglob("*.py")
        if path.name not in {"envoyjson.py", Path(__file__).name} and spelled.search(path.read_text())
    ]
    assert not copies, f"build static clusters with mesh.envoyjson.static_cluster: {copies}"


def test_a_grpc_cluster_speaks_http2_to_its_one_endpoint() -> None:
    c = static_cluster("mesh-telemetry", socket_address("10.0.0.1", 4317), http2=True)
    assert c == {
        "name": "mesh-telemetry",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "mesh-telemetry",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 4317}}}}
                    ]
                }
            ],
        },
    }
    plain = static_cluster("admin-socket", pipe_address(Path("/run/a.sock")))
    assert "typed_extension_protocol_options" not in plain
    assert plain["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": "/run/a.sock", "mode": 0o600}
    }
