"""One table of defects: each case is YAML on top of a small app, and the findings it must produce."""

from __future__ import annotations

import pytest

from mesh.analyze import MESSAGES, REGISTRY, TargetCapabilities, analyze, check, errors
from mesh.api import MeshConfig, Service, ServicePort, Version
from mesh.compile import build_policies, load_yaml
from mesh.errors import AnalysisFailed

APP = [
    Service(name="productpage", versions=[Version(name="v1", command=["x"])]),
    Service(name="reviews", versions=[Version(name=v, command=["x"]) for v in ("v1", "v2", "v3")]),
    Service(
        name="ratings",
        ports=[ServicePort(number=9080), ServicePort(number=9090, name="grpc", protocol="grpc")],
        versions=[Version(name="v1", command=["x"])],
    ),
    Service(name="db", ports=[ServicePort(number=3306, name="mysql")], versions=[Version(name="v1", command=["x"])]),
]

DR_REVIEWS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


SHOP_GW = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com]
"""


def vs(http: str, hosts: str = "[reviews]", extra: str = "", name: str = "reviews") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: {hosts}
{extra}  http:
{http}
"""


CASES: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "weights-total-zero",
        DR_REVIEWS
        + "---"
        + vs(
            "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 0}\n"
            "    - {destination: {host: reviews, subset: v2}, weight: 0}"
        ),
        [("MSH0002", "spec.http[0].route")],
    ),
    (
        "weights-not-100",
        DR_REVIEWS
        + "---"
        + vs(
            "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 60}\n"
            "    - {destination: {host: reviews, subset: v2}, weight: 60}"
        ),
        [("MSH0001", "spec.http[0].route")],
    ),
    (
        "unknown-subset",
        DR_REVIEWS + "---" + vs("  - route:\n    - {destination: {host: reviews, subset: v9}}"),
        [("IST0101", "spec.http[0].route[0].destination.subset")],
    ),
    (
        "subset-without-destination-rule",
        vs("  - route:\n    - {destination: {host: reviews, subset: v1}}"),
        [("IST0101", "spec.http[0].route[0].destination.subset")],
    ),
    (
        "unknown-host",
        vs("  - route:\n    - {destination: {host: reveiws}}"),
        [("IST0101", "spec.http[0].route[0].destination.host")],
    ),
    (
        "missing-gateway",
        vs(
            "  - route:\n    - {destination: {host: productpage}}",
            hosts="[shop.example.com]",
            extra="  gateways: [shop-gw]\n",
            name="shop",
        ),
        [("IST0101", "spec.gateways[0]"), ("IST0132", "spec.gateways[0]")],  # Istio reports both
    ),
    (
        "host-not-in-gateway",
        """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com]
---"""
        + vs(
            "  - route:\n    - {destination: {host: productpage}}",
            hosts="[other.example.com]",
            extra="  gateways: [shop-gw]\n",
            name="shop",
        ),
        [("IST0132", "spec.gateways[0]")],
    ),
    (
        "one-host-served-by-the-gateway-is-enough",
        SHOP_GW
        + "---"
        + vs(
            "  - route:\n    - {destination: {host: productpage}}",
            hosts="[shop.example.com, other.example.com]",
            extra="  gateways: [shop-gw]\n",
            name="shop",
        ),
        [],
    ),
    (
        "two-virtualservices-one-host",
        vs("  - route:\n    - {destination: {host: reviews}}")
        + "---"
        + vs(
            "  - route:\n    - {destination: {host: reviews}}",
            hosts="[reviews.default.svc.cluster.local]",
            name="reviews-2",
        ),
        [("IST0109", "spec.hosts[0]"), ("IST0109", "spec.hosts[0]")],  # both VirtualServices, as Istio
    ),
    (
        "subset-selects-nothing",
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v4, labels: {version: v4}}
""",
        [("IST0173", "spec.subsets[1].labels")],
    ),
    (
        "invalid-regex",
        vs("  - match:\n    - uri: {regex: '/api/(?!internal).*'}\n    route:\n    - {destination: {host: reviews}}"),
        [("IST0106", "spec.http[0].match[0].uri.regex")],
    ),
    (
        "broken-regex",
        vs("  - match:\n    - headers: {x-user: {regex: '[a-z'}}\n    route:\n    - {destination: {host: reviews}}"),
        [("IST0106", "spec.http[0].match[0].headers.x-user.regex")],
    ),
    (
        "strict-mtls-vs-plaintext",
        """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE}
""",
        [("IST0113", "spec.trafficPolicy.tls.mode")],
    ),
    (
        "port-not-exposed",
        vs("  - route:\n    - {destination: {host: productpage, port: {number: 8080}}}"),
        [("IST0101", "spec.http[0].route[0].destination.port.number")],
    ),
    (
        "multi-port-needs-selector",
        vs("  - route:\n    - {destination: {host: ratings}}", hosts="[ratings]", name="ratings"),
        [("IST0112", "spec.http[0].route[0].destination")],
    ),
    (
        "duplicate-names",
        DR_REVIEWS + "---" + DR_REVIEWS,
        [("MSH0004", "")],
    ),
    (
        "duplicate-subset-names",
        DR_REVIEWS + "  - {name: v1, labels: {version: v3}}\n",
        [("MSH0004", "spec.subsets[2].name")],
    ),
    (
        "catch-all-shadows-later-rule",
        vs(
            "  - route:\n    - {destination: {host: reviews}}\n"
            "  - match:\n    - headers: {end-user: {exact: jason}}\n    route:\n    - {destination: {host: reviews}}"
        ),
        [("IST0130", "spec.http[1]")],
    ),
    (
        "prefix-shadows-longer-prefix",
        vs(
            "  - match:\n    - uri: {prefix: /api}\n    route:\n    - {destination: {host: reviews}}\n"
            "  - match:\n    - uri: {prefix: /api/v2}\n    - uri: {exact: /health}\n    route:\n    - {destination: {host: reviews}}"
        ),
        [("IST0131", "spec.http[1].match[0]")],
    ),
    (
        "fault-that-never-fires",
        vs(
            "  - fault: {abort: {httpStatus: 503, percentage: {value: 0}}}\n    route:\n    - {destination: {host: reviews}}"
        ),
        [("MSH0005", "spec.http[0].fault.abort.percentage")],
    ),
    (
        "destination-rule-for-unknown-host",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: nothing}\n",
        [("IST0174", "spec.host")],
    ),
]


def doc(kind: str, name: str, spec: str, namespace: str = "default", api: str = "networking.istio.io/v1") -> str:
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n"


def route_to(host: str, *, hosts: str, extra: str = "") -> str:
    return f"  hosts: {hosts}\n{extra}  http:\n  - route:\n    - destination: {{host: {host}}}"


# Parity with istioctl analyze (issue: fidelity): one case per point, named after it.
CASES += [
    (
        "http-only-authorization-fields-on-a-tcp-port",
        doc(
            "AuthorizationPolicy",
            "db",
            "  selector: {matchLabels: {app: db}}\n  rules:\n  - to: [{operation: {methods: [GET]}}]\n"
            "  - from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]",
            api="security.istio.io/v1",
        ),
        [("MSH0008", "spec.rules[0]")],
    ),
    (
        "fault-without-percentage-never-fires",
        vs(
            "  - fault: {abort: {httpStatus: 503}, delay: {fixedDelay: 1s}}\n    route:\n    - {destination: {host: reviews}}"
        ),
        [("MSH0005", "spec.http[0].fault.abort"), ("MSH0005", "spec.http[0].fault.delay")],
    ),
    (
        "legacy-delay-percent-zero",
        vs("  - fault: {delay: {fixedDelay: 1s, percent: 0}}\n    route:\n    - {destination: {host: reviews}}"),
        [("MSH0005", "spec.http[0].fault.delay.percent")],
    ),
    (
        "conflict-honours-export-to-own-namespace",
        doc("VirtualService", "a", route_to("reviews", hosts="[reviews]", extra='  exportTo: ["."]\n'))
        + "---\n"
        + doc(
            "VirtualService",
            "b",
            route_to(
                "reviews.default.svc.cluster.local",
                hosts="[reviews.default.svc.cluster.local]",
                extra='  exportTo: ["."]\n',
            ),
            namespace="other",
        ),
        [],
    ),
    (
        "conflict-when-exported-to-a-shared-namespace",
        doc("VirtualService", "a", route_to("reviews", hosts="[reviews]", extra='  exportTo: ["."]\n'))
        + "---\n"
        + doc(
            "VirtualService",
            "b",
            route_to(
                "reviews.default.svc.cluster.local",
                hosts="[reviews.default.svc.cluster.local]",
                extra="  exportTo: [default]\n",
            ),
            namespace="other",
        ),
        [("IST0109", "spec.hosts[0]"), ("IST0109", "spec.hosts[0]")],
    ),
    (
        "conflict-between-nested-wildcards",
        doc("VirtualService", "a", route_to("reviews", hosts="['*.d']"))
        + "---\n"
        + doc("VirtualService", "b", route_to("reviews", hosts="['*.productpage.d']")),
        [("IST0109", "spec.hosts[0]"), ("IST0109", "spec.hosts[0]")],
    ),
    (
        "exact-host-under-a-wildcard-is-precedence-not-conflict",
        doc("VirtualService", "a", route_to("reviews", hosts="['*.default.svc.cluster.local']"))
        + "---\n"
        + doc("VirtualService", "b", route_to("reviews", hosts="[reviews]")),
        [],
    ),
    (
        "gateways-compare-namespace-and-host-exactly",
        doc(
            "Gateway",
            "a",
            "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [ns-1/*.example.com]",
        )
        + "---\n"
        + doc(
            "Gateway",
            "b",
            "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [ns-2/*.example.com]",
        ),
        [],
    ),
    (
        "subset-checked-even-when-the-host-is-unknown",
        vs("  - route:\n    - {destination: {host: nothing, subset: v1}}"),
        [
            ("IST0101", "spec.http[0].route[0].destination.host"),
            ("IST0101", "spec.http[0].route[0].destination.subset"),
        ],
    ),
    (
        "gateway-selector-matches-no-workload",
        doc(
            "Gateway",
            "shop-gw",
            "  selector: {istio: nothing}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [shop.example.com]",
        ),
        [("IST0101", "spec.selector")],
    ),
    (
        "internal-gateway-reference",
        vs(
            "  - route:\n    - {destination: {host: productpage}}",
            hosts="[shop.example.com]",
            extra="  gateways: [shop~istio-autogenerated-k8s-gateway~http]\n",
            name="shop",
        ),
        [("IST0165", "spec.gateways[0]")],
    ),
    (
        "duplicate-match-within-one-rule",
        vs(
            "  - match:\n    - uri: {prefix: /a}\n    - uri: {prefix: /a}\n    route:\n    - {destination: {host: reviews}}"
        ),
        [("IST0131", "spec.http[0].match[1]")],
    ),
    (
        "method-qualified-prefix-covers-longer-prefix-with-same-method",
        vs(
            "  - match:\n    - {uri: {prefix: /api}, method: {exact: GET}}\n    route:\n    - {destination: {host: reviews}}\n"
            "  - match:\n    - {uri: {prefix: /api/v2}, method: {exact: GET}}\n    - {uri: {prefix: /api/v2}, method: {exact: POST}}\n"
            "    route:\n    - {destination: {host: reviews}}"
        ),
        [("IST0131", "spec.http[1].match[0]")],
    ),
    (
        "tcp-rule-after-a-rule-without-match",
        doc(
            "VirtualService",
            "reviews",
            "  hosts: [reviews]\n  tcp:\n  - route:\n    - destination: {host: reviews}\n"
            "  - match:\n    - {port: 9080}\n    route:\n    - destination: {host: reviews}",
        ),
        [("IST0130", "spec.tcp[1]")],
    ),
    (
        "tls-duplicate-sni-match",
        doc(
            "VirtualService",
            "reviews",
            "  hosts: [reviews]\n  tls:\n  - match:\n    - sniHosts: [a.example.com]\n    route:\n    - destination: {host: reviews}\n"
            "  - match:\n    - sniHosts: [a.example.com]\n    - sniHosts: [b.example.com]\n    route:\n    - destination: {host: reviews}",
        ),
        [("IST0131", "spec.tls[1].match[0]")],
    ),
    (
        "two-sidecars-without-selector",
        doc("Sidecar", "a", "  egress:\n  - hosts: [./*]")
        + "---\n"
        + doc("Sidecar", "b", "  egress:\n  - hosts: [./*]"),
        [("IST0111", ""), ("IST0111", "")],
    ),
    (
        "two-sidecars-select-one-workload",
        doc("Sidecar", "a", "  workloadSelector: {labels: {app: reviews}}\n  egress:\n  - hosts: [./*]")
        + "---\n"
        + doc("Sidecar", "b", "  workloadSelector: {labels: {version: v2}}\n  egress:\n  - hosts: [./*]"),
        [("IST0110", "spec.workloadSelector"), ("IST0110", "spec.workloadSelector")],
    ),
    (
        "sidecar-selector-matches-no-workload",
        doc("Sidecar", "a", "  workloadSelector: {labels: {app: nothing}}\n  egress:\n  - hosts: [./*]"),
        [("IST0101", "spec.workloadSelector")],
    ),
    (
        "service-entry-hosts-are-known-destinations",
        doc(
            "ServiceEntry",
            "api",
            "  hosts: [api.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  resolution: DNS",
        )
        + "---\n"
        + doc("VirtualService", "api", route_to("api.example.com", hosts="[api.example.com]"))
        + "---\n"
        + doc("DestinationRule", "api", "  host: api.example.com"),
        [],
    ),
]


def _rate_limit(routes: str) -> str:
    spec = f"  tokenBucket: {{maxTokens: 5}}\n  routes:\n{routes}"
    return doc("RateLimit", "pages", spec, namespace="istio-system", api="meshops.dev/v1alpha1")


def _shop_routes(first_name: str = "") -> str:
    named = f"  - name: {first_name}\n" if first_name else "  - "
    prefix = "    " if first_name else ""
    return (
        SHOP_GW
        + "---"
        + vs(
            f"{named}{prefix}match: [{{uri: {{prefix: /api}}}}]\n    route:\n    - destination: {{host: productpage}}\n"
            "  - name: rest\n    route:\n    - destination: {host: productpage}",
            hosts="[shop.example.com]",
            extra="  gateways: [shop-gw]\n",
            name="shop",
        )
    )


# Route-scoped RateLimits (meshops' kind): a selector that limits nothing, or that Kubernetes cannot apply
CASES += [
    (
        "ratelimit-route-selects-a-named-gateway-route",
        _shop_routes("api") + "---\n" + _rate_limit("  - {host: shop.example.com, path: /api}"),
        [],
    ),
    (
        "ratelimit-route-selects-nothing",
        _shop_routes("api") + "---\n" + _rate_limit("  - {host: shop.example.com, path: /typo}"),
        [("MSH0007", "spec.routes[0]")],
    ),
    (
        "ratelimit-route-is-unnamed",
        _shop_routes() + "---\n" + _rate_limit("  - {virtualService: default/shop}"),
        [("MSH0007", "spec.routes[0]")],
    ),
]


# VirtualService exportTo and the gateways it binds: the gateway proxy's namespace (istio-system) must see it
CASES += [
    (
        "gateway-virtualservice-exported-to-its-namespace-only",
        SHOP_GW
        + "---"
        + vs(
            "  - route:\n    - {destination: {host: productpage}}",
            hosts="[shop.example.com]",
            extra='  gateways: [shop-gw]\n  exportTo: ["."]\n',
            name="shop",
        ),
        [("MSH0009", "spec.exportTo")],
    ),
    (
        "gateway-virtualservice-exported-to-the-gateways-namespace",
        SHOP_GW
        + "---"
        + vs(
            "  - route:\n    - {destination: {host: productpage}}",
            hosts="[shop.example.com]",
            extra='  gateways: [shop-gw, mesh]\n  exportTo: [".", istio-system]\n',
            name="shop",
        ),
        [],
    ),
]


@pytest.mark.parametrize("yaml_text,expected", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_defect_is_reported_with_code_and_path(yaml_text: str, expected: list[tuple[str, str]]) -> None:
    config = load_yaml(yaml_text, "case.yaml")
    config.services.extend(APP)
    found = [(f.code, f.path) for f in analyze(config)]
    assert found == expected, "\n".join(str(f) for f in analyze(config))


def test_errors_block_and_warnings_do_not() -> None:
    config = load_yaml(CASES[0][1], "case.yaml")
    config.services.extend(APP)
    with pytest.raises(AnalysisFailed) as e:
        check(config)
    assert "MSH0002" in str(e.value) and "nothing was applied" in str(e.value)
    warn = load_yaml(CASES[1][1], "case.yaml")
    warn.services.extend(APP)
    assert [f.code for f in check(warn)] == ["MSH0001"]


def test_findings_name_the_file_and_line() -> None:
    config = load_yaml(CASES[2][1], "case.yaml")
    config.services.extend(APP)
    (f,) = analyze(config)
    assert str(f).startswith(
        "Error [IST0101] (VirtualService default/reviews case.yaml:11) spec.http[0].route[0].destination.subset:"
    )


def test_unsupported_field_for_target_is_an_error_never_silent() -> None:
    config = load_yaml(vs("  - route:\n    - {destination: {host: reviews}}\n    corsPolicy: {allowMethods: [GET]}"))
    config.services.extend(APP)
    target = TargetCapabilities(name="toy", unsupported={"VirtualService.http[].corsPolicy": "CORS is not translated"})
    (f,) = errors(analyze(config, target))
    assert (f.code, f.path) == ("MSH0100", "spec.http[0].corsPolicy")
    assert "toy target" in f.message


def test_target_needs_command_or_image() -> None:
    config = MeshConfig(services=[Service(name="a", versions=[Version(name="v1", image="img")])])
    (f,) = analyze(config, TargetCapabilities(name="local", needs="command"))
    assert (f.code, f.path) == ("MSH0006", "versions[0].command")
    assert analyze(config, TargetCapabilities(name="kubernetes", needs="image")) == []


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_shipped_policies_are_clean(env: str) -> None:
    from mesh.targets import capabilities

    for target in ("local", "kubernetes"):
        assert analyze(build_policies(env), capabilities(target)) == []


def test_every_analyzer_is_registered_named_and_described() -> None:
    names = [a.name for a in REGISTRY]
    assert len(names) == len(set(names))
    assert all(a.description for a in REGISTRY)
    used = {c for a in REGISTRY for c in a.codes}
    assert used <= set(MESSAGES)
    assert set(MESSAGES) <= used, f"catalog codes no analyzer emits: {set(MESSAGES) - used}"


def test_every_code_is_exercised_by_the_grid() -> None:
    covered = {code for _, _, exp in CASES for code, _ in exp} | {"MSH0100", "MSH0006", "IST0145"}
    assert set(MESSAGES) <= covered, set(MESSAGES) - covered


def test_conflicting_gateways() -> None:
    gw = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
"""
    config = load_yaml(gw.format(name="a") + "---" + gw.format(name="b"))
    assert [(f.code, f.resource) for f in analyze(config)] == [
        ("IST0145", "Gateway default/a"),
        ("IST0145", "Gateway default/b"),
    ]


def test_local_target_reports_what_it_does_not_implement() -> None:
    from pathlib import Path

    from mesh.compile import load_file
    from mesh.targets import capabilities

    shop = Path(__file__).parents[1] / "compile" / "fixtures" / "shop.yaml"
    found = {(f.code, f.path) for f in analyze(load_file(shop), capabilities("local"))}
    assert found == {
        ("MSH0006", "versions[0].command"),
    }
    assert all(
        f.source is not None and f.source.file.endswith("shop.yaml")
        for f in analyze(load_file(shop), capabilities("local"))
    )


def test_every_code_is_documented_where_findings_link() -> None:
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "analysis.md").read_text()
    for code, m in MESSAGES.items():
        assert f"## {code}" in doc and m.name in doc, f"{code} missing from docs/analysis.md"


def test_local_target_reports_gateway_protocols_and_tls_modes_it_does_not_implement() -> None:
    """TCP, TLS, PASSTHROUGH and AUTO_PASSTHROUGH are translated locally (tcp.py); UDP and OPTIONAL_MUTUAL are not."""
    from mesh.targets import capabilities

    gw = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: passthrough}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: udp, protocol: UDP}
    hosts: [db.example.com]
    tls: {mode: OPTIONAL_MUTUAL}
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
"""
    found = {(f.code, f.path) for f in analyze(load_yaml(gw), capabilities("local"))}
    assert found == {("MSH0100", "spec.servers[0].port.protocol"), ("MSH0100", "spec.servers[0].tls.mode")}
