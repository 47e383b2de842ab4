"""What Istio's validation webhook rejects, we reject with the same meaning — and what its API has, we accept."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mesh.api import (
    AuthorizationPolicy,
    DestinationRule,
    EnvoyFilter,
    Gateway,
    PeerAuthentication,
    RequestAuthentication,
    ServiceEntry,
    Sidecar,
    Telemetry,
    VirtualService,
    WorkloadEntry,
)


def vs(**rule: Any) -> dict[str, Any]:
    return {"name": "r", "hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}], **rule}]}


def gateway(protocol: str) -> dict[str, Any]:
    return {"name": "g", "servers": [{"port": {"number": 443, "name": "tls", "protocol": protocol}, "hosts": ["*"]}]}


@pytest.mark.parametrize("spelling", ["tls", "TLS", "Tls", "http2", "grpc-web"])
def test_protocols_are_case_insensitive_and_kept_canonical(spelling: str) -> None:
    g = Gateway.model_validate(gateway(spelling))
    assert g.servers[0].port.protocol == spelling.upper()


def test_unknown_protocol_is_rejected() -> None:
    with pytest.raises(ValidationError, match="protocol"):
        Gateway.model_validate(gateway("quic"))


def test_abort_percent_error_names_its_replacement() -> None:
    with pytest.raises(ValidationError, match=r"abort.percent was removed.*percentage: \{value: N\}"):
        VirtualService.model_validate(vs(fault={"abort": {"httpStatus": 503, "percent": 50}}))


def test_delay_percent_is_still_served() -> None:
    v = VirtualService.model_validate(vs(fault={"delay": {"fixedDelay": "1s", "percent": 50}}))
    assert v.http[0].fault and v.http[0].fault.delay and v.http[0].fault.delay.percent == 50


@pytest.mark.parametrize(
    "port_level,message",
    [({0: {"mode": "DISABLE"}}, "port 0"), ({42949672: {"mode": "DISABLE"}}, "port 42949672"), ({}, "is empty")],
)
def test_peer_authentication_ports(port_level: dict[int, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PeerAuthentication.model_validate(
            {"name": "p", "selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": port_level}
        )


@pytest.mark.parametrize(
    "weight,message",
    [(10**30, "less than or equal to 2147483647"), (True, "valid integer"), ("3", "valid integer"), (-1, "greater")],
)
def test_weights_are_int32(weight: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VirtualService.model_validate(
            {"name": "r", "hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}, "weight": weight}]}]}
        )


def test_weights_of_a_route_must_fit_envoys_uint32_total() -> None:
    route = [{"destination": {"host": "r", "subset": s}, "weight": 2**31 - 1} for s in ("a", "b", "c")]
    with pytest.raises(ValidationError, match="add up to more than"):
        VirtualService.model_validate({"name": "r", "hosts": ["r"], "http": [{"route": route}]})


@pytest.mark.parametrize("host", ["rëviews", "reviews..default", "foo.*", "-a.b", "a" * 64, "*.*.example.com"])
def test_invalid_hosts_are_rejected(host: str) -> None:
    with pytest.raises(ValidationError, match="host"):
        VirtualService.model_validate({**vs(), "hosts": [host]})


@pytest.mark.parametrize("host", ["reviews", "*", "*.example.com", "reviews.default.svc.cluster.local.", "Foo.com"])
def test_valid_hosts_are_accepted(host: str) -> None:
    assert VirtualService.model_validate({**vs(), "hosts": [host]}).hosts == [host]


def test_destination_host_cannot_be_a_bare_wildcard() -> None:
    with pytest.raises(ValidationError, match="cannot be"):
        VirtualService.model_validate(
            {"name": "r", "hosts": ["r"], "http": [{"route": [{"destination": {"host": "*"}}]}]}
        )


@pytest.mark.parametrize(
    "host,ok", [("ns-1/*.example.com", True), ("*/foo", True), ("./foo", True), ("Bad_NS/x", False)]
)
def test_gateway_hosts_have_an_optional_namespace(host: str, ok: bool) -> None:
    spec = {"name": "g", "servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP"}, "hosts": [host]}]}
    if ok:
        Gateway.model_validate(spec)
    else:
        with pytest.raises(ValidationError, match="not a namespace"):
            Gateway.model_validate(spec)


def test_durations_are_bounded_by_what_envoy_accepts() -> None:
    with pytest.raises(ValidationError, match="longest duration Envoy accepts"):
        VirtualService.model_validate(vs(timeout="999999999999s"))
    assert VirtualService.model_validate(vs(timeout="315576000000s")).http[0].timeout == "315576000000s"


def test_exponential_delay_is_rejected_as_istio_does() -> None:
    with pytest.raises(ValidationError, match="exponentialDelay is not supported yet"):
        VirtualService.model_validate(vs(fault={"delay": {"exponentialDelay": "1s"}}))


def test_fields_istio_has_are_accepted() -> None:
    dr = DestinationRule.model_validate(
        {
            "name": "d",
            "host": "reviews",
            "workloadSelector": {"matchLabels": {"app": "productpage"}},
            "trafficPolicy": {
                "loadBalancer": {
                    "consistentHash": {"httpCookie": {"name": "u", "ttl": "0s", "attributes": [{"name": "SameSite"}]}},
                    "warmup": {"duration": "10s", "minimumPercent": 10, "aggression": 1.5},
                },
                "connectionPool": {
                    "http": {"h2UpgradePolicy": "UPGRADE", "http2KeepAlive": {"interval": "30s"}},
                    "tcp": {"tcpKeepalive": {"probes": 3, "time": "10s"}},
                },
                "tunnel": {"targetHost": "proxy", "targetPort": 3128},
            },
        }
    )
    assert dr.to_manifest()["spec"]["trafficPolicy"]["connectionPool"]["http"]["h2UpgradePolicy"] == "UPGRADE"
    ap = AuthorizationPolicy.model_validate(
        {
            "name": "a",
            "action": "CUSTOM",
            "provider": {"name": "ext-authz"},
            "rules": [{"from": [{"source": {"remoteIpBlocks": ["1.2.3.4/32"], "notRemoteIpBlocks": ["5.6.7.8"]}}]}],
        }
    )
    assert ap.to_manifest()["spec"]["provider"] == {"name": "ext-authz"}
    v = VirtualService.model_validate(
        vs(
            mirrors=[{"destination": {"host": "m"}, "percentage": {"value": 5.0}}],
            retries={"attempts": 2, "backoff": "25ms"},
        )
    )
    assert v.to_manifest()["spec"]["http"][0]["mirrors"][0]["destination"] == {"host": "m"}


def test_custom_action_and_provider_go_together() -> None:
    with pytest.raises(ValidationError, match="CUSTOM needs a provider"):
        AuthorizationPolicy.model_validate({"name": "a", "action": "CUSTOM"})


def test_one_rule_has_one_action() -> None:
    with pytest.raises(ValidationError, match="cannot both be set"):
        VirtualService.model_validate(vs(directResponse={"status": 503}))


# --- the kinds beyond the first five ------------------------------------------------------------


def test_service_entry() -> None:
    se = ServiceEntry.model_validate(
        {
            "name": "ext",
            "hosts": ["api.example.com"],
            "ports": [{"number": 443, "name": "https", "protocol": "tls"}],
            "resolution": "DNS",
        }
    )
    assert se.to_manifest()["spec"]["ports"] == [{"number": 443, "protocol": "TLS", "name": "https"}]
    with pytest.raises(ValidationError, match="duplicate port number 443"):
        ServiceEntry.model_validate(
            {"name": "e", "hosts": ["a.com"], "ports": [{"number": 443, "name": "a"}, {"number": 443, "name": "b"}]}
        )
    with pytest.raises(ValidationError, match="not an IP address"):
        ServiceEntry.model_validate({"name": "e", "hosts": ["a.com"], "addresses": ["not-an-ip"]})


def test_workload_entry_keeps_spec_labels_apart_from_metadata_labels() -> None:
    we = WorkloadEntry.model_validate(
        {"name": "vm", "labels": {"team": "a"}, "workload_labels": {"app": "ratings"}, "address": "10.0.0.1"}
    )
    m = we.to_manifest()
    assert m["metadata"]["labels"] == {"team": "a"}
    assert m["spec"] == {"address": "10.0.0.1", "labels": {"app": "ratings"}}


def test_sidecar_egress_hosts_need_a_namespace() -> None:
    Sidecar.model_validate({"name": "s", "egress": [{"hosts": ["./*", "istio-system/*"]}]})
    with pytest.raises(ValidationError, match="namespace/dnsName"):
        Sidecar.model_validate({"name": "s", "egress": [{"hosts": ["reviews"]}]})


def test_envoy_filter_patch_values_are_checked_against_envoys_protos() -> None:
    def ef(value: dict[str, Any], apply_to: str = "CLUSTER") -> dict[str, Any]:
        return {"name": "f", "configPatches": [{"applyTo": apply_to, "patch": {"operation": "MERGE", "value": value}}]}

    EnvoyFilter.model_validate(ef({"connect_timeout": "2s"}))
    with pytest.raises(ValidationError, match=r"not a valid Envoy Cluster.*conect_timeout"):
        EnvoyFilter.model_validate(ef({"conect_timeout": "2s"}))
    with pytest.raises(ValidationError, match="not a valid Envoy HttpFilter"):
        EnvoyFilter.model_validate(ef({"nmae": "x"}, "HTTP_FILTER"))
    with pytest.raises(ValidationError, match="applyTo is required"):
        EnvoyFilter.model_validate({"name": "f", "configPatches": [{"patch": {"operation": "REMOVE"}}]})


def test_request_authentication() -> None:
    ra = RequestAuthentication.model_validate(
        {"name": "jwt", "jwtRules": [{"issuer": "testing@secure.istio.io", "jwksUri": "https://example.com/jwks.json"}]}
    )
    assert ra.to_manifest()["spec"]["jwtRules"][0]["issuer"] == "testing@secure.istio.io"
    with pytest.raises(ValidationError, match="duplicate issuer"):
        RequestAuthentication.model_validate({"name": "j", "jwtRules": [{"issuer": "a"}, {"issuer": "a"}]})
    with pytest.raises(ValidationError, match="jwksUri or jwks"):
        RequestAuthentication.model_validate(
            {"name": "j", "jwtRules": [{"issuer": "a", "jwks": "{}", "jwksUri": "https://x"}]}
        )


def test_telemetry() -> None:
    t = Telemetry.model_validate(
        {
            "name": "t",
            "tracing": [{"randomSamplingPercentage": 10.0, "customTags": {"env": {"literal": {"value": "dev"}}}}],
        }
    )
    assert t.to_manifest()["apiVersion"] == "telemetry.istio.io/v1"
    with pytest.raises(ValidationError, match="exactly one of literal"):
        Telemetry.model_validate({"name": "t", "tracing": [{"customTags": {"env": {}}}]})
