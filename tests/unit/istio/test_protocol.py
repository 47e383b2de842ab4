"""Protocol selection as Istio makes it: appProtocol, then the port name's prefix, else TCP."""

from __future__ import annotations

import pytest

from mesh.api import MeshConfig, Service, ServicePort, Version, VirtualService
from mesh.api.security import Operation, Rule, RuleTo
from mesh.compile.render import service_manifests
from mesh.istio.protocol import http_only_fields, port_protocol, routed_as_connections, tcp_rule


@pytest.mark.parametrize(
    "port,expected",
    [
        (ServicePort(number=9080), "HTTP"),
        (ServicePort(number=9080, name="http-web"), "HTTP"),
        (ServicePort(number=9080, name="HTTP2"), "HTTP2"),
        (ServicePort(number=9090, name="grpc-api"), "GRPC"),
        (ServicePort(number=9090, name="grpc-web-ui"), "GRPC-Web"),
        (ServicePort(number=3306, name="mysql"), "MySQL"),
        (ServicePort(number=27017, name="mongo-main"), "Mongo"),
        (ServicePort(number=6379, name="redis"), "Redis"),
        (ServicePort(number=443, name="https-api"), "HTTPS"),
        (ServicePort(number=9000, name="tls"), "TLS"),
        (ServicePort(number=9000, name="echo"), "TCP"),  # unknown name: TCP (Istio would sniff)
        (ServicePort(number=9000, name="httpx"), "TCP"),  # the prefix is the part before `-`
        (ServicePort(number=9000, name="web", app_protocol="http"), "HTTP"),  # appProtocol first
        (ServicePort(number=9000, name="http", app_protocol="mysql"), "MySQL"),
        (ServicePort(number=9000, name="tcp", app_protocol="kubernetes.io/h2c"), "HTTP2"),
        (ServicePort(number=9000, name="tcp", app_protocol="something-else"), "TCP"),  # unknown: the name decides
        (ServicePort(number=9000, name="tcp", protocol="grpc"), "GRPC"),  # our shorthand
    ],
)
def test_port_protocol(port: ServicePort, expected: str) -> None:
    assert port_protocol(port) == expected


def test_kubernetes_rendering_carries_the_selected_protocol() -> None:
    svc = Service(
        name="db",
        ports=[ServicePort(number=3306, name="mysql"), ServicePort(number=8080, name="admin", app_protocol="http")],
        versions=[Version(name="v1", image="x")],
    )
    ports = next(m for m in service_manifests(svc) if m["kind"] == "Service")["spec"]["ports"]
    assert [(p["name"], p["appProtocol"]) for p in ports] == [("mysql", "mysql"), ("admin", "http")]


def test_http_only_fields_make_an_allow_rule_match_nothing_and_a_deny_rule_broader() -> None:
    rule = Rule(to=[RuleTo(operation=Operation(methods=["GET"], ports=["9000"]))])
    assert http_only_fields(rule) == ["to[0].operation.methods"]
    assert tcp_rule(rule, "ALLOW") is None
    denied = tcp_rule(rule, "DENY")
    assert denied is not None and denied.to[0].operation.methods == [] and denied.to[0].operation.ports == ["9000"]
    plain = Rule(to=[RuleTo(operation=Operation(ports=["9000"]))])
    assert tcp_rule(plain, "ALLOW") is plain


def test_what_needs_transparent_interception() -> None:
    web = Service(name="web", versions=[Version(name="v1", command=["x"])])
    db = Service(
        name="db", ports=[ServicePort(number=3306, name="mysql")], versions=[Version(name="v1", command=["x"])]
    )
    assert routed_as_connections(MeshConfig(services=[web])) == []
    vs = VirtualService(name="web", hosts=["web"], tcp=[{"route": [{"destination": {"host": "web"}}]}])
    found = routed_as_connections(MeshConfig(services=[web, db], resources=[vs]))
    assert found == ["Service default/db port 3306 (MySQL)", "VirtualService default/web (tcp routes)"]
