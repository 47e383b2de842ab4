"""Istio's labels from access-log entries: each label's source, the buckets, the text format."""

from __future__ import annotations

import re

from mesh.observability.metrics import BUCKETS, LABELS, MeshMetrics, response_flags
from mesh.observability.workloads import Workload, WorkloadDirectory
from tests.unit.observability.conftest import PRODUCTPAGE, REVIEWS_V1, REVIEWS_V3, directory, http_entry

REVIEWS_V1_CLUSTER = "outbound|9080|v1|reviews.default.svc.cluster.local"


def series(text: str, name: str) -> list[dict[str, str]]:
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{name}{{(.*)}} (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            labels["__value__"] = m.group(2)
            out.append(labels)
    return out


def test_source_reporter_takes_itself_as_source_and_the_upstream_host_as_destination() -> None:
    m = MeshMetrics(directory())
    m.record_http(http_entry(upstream=REVIEWS_V1.ip, cluster=REVIEWS_V1_CLUSTER), "source", PRODUCTPAGE)
    [s] = series(m.exposition(), "istio_requests_total")
    assert s["reporter"] == "source"
    assert (s["source_workload"], s["source_app"], s["source_version"]) == ("productpage-v1", "productpage", "v1")
    assert s["source_principal"] == "spiffe://cluster.local/ns/default/sa/productpage"
    assert s["destination_service"] == "reviews.default.svc.cluster.local"
    assert (s["destination_service_name"], s["destination_service_namespace"]) == ("reviews", "default")
    assert (s["destination_workload"], s["destination_version"]) == ("reviews-v1", "v1")
    assert s["destination_principal"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert s["connection_security_policy"] == "unknown"  # as in Istio: the caller does not report it
    assert (s["response_code"], s["response_flags"], s["request_protocol"]) == ("200", "-", "http")
    assert set(s) - {"__value__"} == set(LABELS)
    assert s["__value__"] == "1"


def test_destination_reporter_reads_the_peer_from_the_direct_remote_address_and_the_tls_peer() -> None:
    m = MeshMetrics(directory())
    uri = "spiffe://cluster.local/ns/default/sa/productpage"
    m.record_http(http_entry(downstream=PRODUCTPAGE.ip, peer_uri=uri), "destination", REVIEWS_V3)
    m.record_http(http_entry(downstream="127.0.0.1"), "destination", REVIEWS_V3)
    rows = {s["connection_security_policy"]: s for s in series(m.exposition(), "istio_requests_total")}
    mtls, plain = rows["mutual_tls"], rows["none"]
    assert (mtls["source_workload"], mtls["source_principal"]) == ("productpage-v1", uri)
    assert mtls["destination_principal"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert (mtls["destination_workload"], mtls["destination_version"]) == ("reviews-v3", "v3")
    assert mtls["destination_service"] == "reviews.default.svc.cluster.local"
    assert (plain["source_workload"], plain["source_principal"], plain["destination_principal"]) == (
        "unknown",
        "unknown",
        "unknown",
    )


def test_fault_abort_is_its_code_with_flag_fi_and_counts_are_exact() -> None:
    m = MeshMetrics(directory())
    for i in range(10):
        fault = i < 3
        m.record_http(
            http_entry(
                upstream="" if fault else REVIEWS_V1.ip,
                cluster=REVIEWS_V1_CLUSTER,
                code=503 if fault else 200,
                fault=fault,
            ),
            "source",
            PRODUCTPAGE,
        )
    fqdn = "reviews.default.svc.cluster.local"
    assert m.counter("istio_requests_total", response_code="503", response_flags="FI", destination_service=fqdn) == 3
    assert m.counter("istio_requests_total", response_code="200", response_flags="-") == 7
    assert m.counter("istio_requests_total", reporter="source") == 10


def test_histograms_use_istios_buckets_cumulatively_with_sum_and_count() -> None:
    m = MeshMetrics(directory())
    for ms in (3, 3, 40, 2000):
        m.record_http(http_entry(upstream=REVIEWS_V1.ip, cluster=REVIEWS_V1_CLUSTER, ms=ms), "source", PRODUCTPAGE)
    text = m.exposition()
    buckets = {s["le"]: int(s["__value__"]) for s in series(text, "istio_request_duration_milliseconds_bucket")}
    assert list(buckets) == [*(str(int(b)) if float(b).is_integer() else str(b) for b in BUCKETS), "+Inf"]
    assert (buckets["1"], buckets["5"], buckets["50"], buckets["1000"], buckets["2500"], buckets["+Inf"]) == (
        0, 2, 3, 3, 4, 4,
    )  # fmt: skip
    [total] = series(text, "istio_request_duration_milliseconds_sum")
    assert float(total["__value__"]) == 2046
    [size] = series(text, "istio_response_bytes_sum")
    assert float(size["__value__"]) == 4 * 200  # headers + body
    assert "# TYPE istio_request_bytes histogram" in text


def test_response_flags_print_as_envoys_short_codes() -> None:
    e = http_entry()
    e.common_properties.response_flags.upstream_connection_failure = True
    e.common_properties.response_flags.upstream_retry_limit_exceeded = True
    assert response_flags(e.common_properties.response_flags) == "UF,URX"
    assert response_flags(http_entry().common_properties.response_flags) == "-"


def test_label_values_are_escaped() -> None:
    m = MeshMetrics(directory())
    m.record_http(http_entry(cluster='outbound|80||we"ird\\host'), "source", PRODUCTPAGE)
    assert 'destination_service="we\\"ird\\\\host"' in m.exposition()


def test_a_peer_whose_address_names_nothing_is_found_by_its_mtls_identity_when_that_is_one_workloads() -> None:
    """A gateway outside the pods reaches them from the host's bridge address (transparent capture): its certificate
    still names it. A service account two workloads share names neither."""
    gateway = Workload(
        ip="127.9.0.2", name="istio-ingressgateway", pod="istio-ingressgateway-0", namespace="istio-system",
        app="istio-ingressgateway", version="", service_account="istio-ingressgateway-service-account",
    )  # fmt: skip
    replica = gateway.model_copy(update={"ip": "127.9.0.3", "pod": "istio-ingressgateway-1"})
    m = MeshMetrics(WorkloadDirectory(workloads=[PRODUCTPAGE, REVIEWS_V1, REVIEWS_V3, gateway, replica]))
    m.record_http(http_entry(downstream="10.8.0.1", peer_uri=gateway.principal), "destination", PRODUCTPAGE)
    m.record_http(http_entry(downstream="10.8.0.1", peer_uri=REVIEWS_V1.principal), "destination", PRODUCTPAGE)
    rows = {s["source_principal"]: s for s in series(m.exposition(), "istio_requests_total")}
    assert rows[gateway.principal]["source_workload"] == "istio-ingressgateway"
    assert rows[gateway.principal]["source_workload_namespace"] == "istio-system"
    assert rows[REVIEWS_V1.principal]["source_workload"] == "unknown"  # reviews-v1 and reviews-v3 share it
