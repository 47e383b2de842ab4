"""The Edge policy rejects what cannot run and compiles to the HAProxy directives that carry each behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mesh.api.edge import Edge, EdgeListener, EdgeTLS, HealthCheck, Rate, RateLimits
from mesh.edge import EdgePolicyError, EdgeTier, EdgeUnavailable, Replica, haproxy_binary, render
from mesh.edge.config import Paths

REPLICAS = [Replica("gw0", "127.9.0.1", 8080), Replica("gw1", "127.9.0.2", 8080, health_port=15021)]
PATHS = Paths(admin_socket=Path("/run/edge/admin.sock"), certificates={"edge-cert": Path("/run/edge/certs/e.pem")})


def _edge(**fields: object) -> Edge:
    return Edge.model_validate({"name": "edge", "listeners": [{"name": "http", "port": 8000}], **fields})


def test_unknown_fields_and_bad_values_are_named() -> None:
    with pytest.raises(ValidationError) as e:
        Edge.model_validate({"name": "e", "listeners": [{"name": "http", "port": 80, "tsl": {}}]})
    assert e.value.errors()[0]["loc"] == ("listeners", 0, "tsl")
    with pytest.raises(ValidationError, match="not a duration"):
        Rate(requests=1, period="1 second")
    with pytest.raises(ValidationError, match="bind the same address and port"):
        _edge(listeners=[{"name": "a", "port": 80}, {"name": "b", "port": 80}])
    with pytest.raises(ValidationError):
        EdgeTLS(credential="c", alpn=[])


def test_wire_form_is_camel_case() -> None:
    edge = _edge(rateLimits={"perClient": {"requests": 5, "period": "2s"}}, healthCheck={"path": "/ready"})
    assert edge.rate_limits == RateLimits(per_client=Rate(requests=5, period="2s"))
    assert edge.to_manifest()["spec"]["rateLimits"] == {
        "perClient": {"requests": 5, "period": "2s"},
        "status": 429,
        "tableSize": 100000,
    }
    assert edge.to_manifest()["apiVersion"] == "meshops.dev/v1alpha1"


def test_rate_limits_track_and_deny_per_client_and_per_host() -> None:
    text = render(
        _edge(rate_limits=RateLimits(per_client=Rate(requests=20, period="10s"), per_host=Rate(requests=5))),
        REPLICAS,
        PATHS,
    )
    assert "stick-table type ipv6 size 100000 expire 20000ms store http_req_rate(10000ms)" in text
    assert "http-request track-sc0 src table st_client" in text
    assert "http-request deny deny_status 429 if { sc_http_req_rate(0,st_client) gt 20 }" in text
    assert "http-request track-sc1 req.hdr(host),lower table st_host" in text
    assert "if { sc_http_req_rate(1,st_host) gt 5 }" in text


def test_tls_listener_offers_h2_by_alpn() -> None:
    edge = _edge(listeners=[EdgeListener(name="https", port=8443, tls=EdgeTLS(credential="edge-cert"))])
    text = render(edge, REPLICAS, PATHS)
    assert "bind 127.0.0.1:8443 ssl crt /run/edge/certs/e.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2" in text
    assert "http-request set-header X-Forwarded-Proto https" in text


def test_replicas_are_health_checked_and_failures_redispatched() -> None:
    text = render(_edge(health_check=HealthCheck(interval="250ms", fall=3)), REPLICAS, PATHS)
    assert "server gw0 127.9.0.1:8080 check\n" in text
    assert "server gw1 127.9.0.2:8080 check port 15021" in text
    assert "http-check send meth GET uri /healthz/ready ver HTTP/1.1" in text
    elsewhere = Replica("gw2", "127.9.0.10", 8080, health_port=15000, health_host="127.9.0.3")
    assert "server gw2 127.9.0.10:8080 check addr 127.9.0.3 port 15000" in render(_edge(), [elsewhere], PATHS)
    assert "inter 250ms" in text and "fall 3" in text
    assert "option redispatch 1" in text and "retry-on conn-failure empty-response" in text
    assert "option forwardfor" in text
    assert "expose-fd listeners" in text  # seamless reload


def test_proxy_protocol_replaces_forwarded_for() -> None:
    text = render(_edge(forward="proxy-protocol"), REPLICAS[:1], PATHS)
    assert "option forwardfor" not in text
    assert "server gw0 127.9.0.1:8080 check send-proxy-v2 check-send-proxy" in text


def test_rendering_is_deterministic_and_needs_a_replica() -> None:
    assert render(_edge(), REPLICAS, PATHS) == render(_edge(), REPLICAS, PATHS)
    with pytest.raises(ValueError, match="at least one gateway replica"):
        render(_edge(), [], PATHS)


def test_missing_credential_names_listener_and_files(tmp_path: Path) -> None:
    edge = _edge(listeners=[EdgeListener(name="https", port=8443, tls=EdgeTLS(credential="nope"))])
    with pytest.raises(EdgePolicyError, match=r"listener 'https'.*credential 'nope'") as e:
        EdgeTier(edge, REPLICAS, tmp_path, tmp_path / "creds").render()
    assert "tls.crt" in str(e.value)


def test_missing_haproxy_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESH_HAPROXY", str(tmp_path / "no-such-haproxy"))
    with pytest.raises(EdgeUnavailable, match="apt-get install haproxy"):
        haproxy_binary()


def test_certificate_pem_is_private(tmp_path: Path) -> None:
    creds = tmp_path / "creds" / "edge-cert"
    creds.mkdir(parents=True)
    (creds / "tls.crt").write_text("CERT\n")
    (creds / "tls.key").write_text("KEY\n")
    edge = _edge(listeners=[EdgeListener(name="https", port=8443, tls=EdgeTLS(credential="edge-cert"))])
    EdgeTier(edge, REPLICAS, tmp_path / "run", tmp_path / "creds").render()
    pem = tmp_path / "run" / "certs" / "edge-cert.pem"
    assert pem.read_text() == "CERT\nKEY\n"
    assert pem.stat().st_mode & 0o777 == 0o600
