"""`mesh simulate`'s RBAC decision: the destination's translated inbound RBAC filters evaluated for the request."""

from __future__ import annotations

from mesh.api import MeshConfig
from mesh.api.security import AuthorizationPolicy, Operation, Rule, RuleFrom, RuleTo, Source
from mesh.compile import build_policies
from mesh.controlplane.simulate import simulate

PRODUCTPAGE = "cluster.local/ns/default/sa/productpage"


def _with(*policies: AuthorizationPolicy) -> MeshConfig:
    base = build_policies("dev")
    keys = {p.key for p in policies}
    no_authz = [r for r in base.resources if not isinstance(r, AuthorizationPolicy) and r.key not in keys]
    return MeshConfig(services=base.services, resources=no_authz + list(policies))


def _decision(config: MeshConfig, path: str = "/reviews/1", method: str = "GET") -> tuple[bool, str | None, str]:
    sim = simulate(config, "productpage-v1-0", f"http://reviews:9080{path}", {}, method)
    assert sim.hit is not None and sim.decisions, sim
    d = next(iter(sim.decisions.values()))
    return d.allowed, d.policy, d.reason


def _allow(name: str, rule: Rule) -> AuthorizationPolicy:
    return AuthorizationPolicy(name=name, namespace="default", action="ALLOW", rules=[rule])


def test_no_policy_allows() -> None:
    allowed, policy, reason = _decision(_with())
    assert (allowed, policy) == (True, None) and "no authorization policy" in reason


def test_an_allow_matching_the_caller_allows_and_is_named() -> None:
    rule = Rule(
        from_=[RuleFrom(source=Source(principals=[PRODUCTPAGE]))], to=[RuleTo(operation=Operation(methods=["GET"]))]
    )
    allowed, policy, _ = _decision(_with(_allow("reviews-readers", rule)))
    assert allowed and policy == "ns[default]-policy[reviews-readers]-rule[0]"


def test_an_allow_that_matches_nothing_denies() -> None:
    rule = Rule(to=[RuleTo(operation=Operation(methods=["POST"], paths=["/admin*"]))])
    allowed, policy, reason = _decision(_with(_allow("admins-only", rule)))
    assert (allowed, policy) == (False, None) and "no ALLOW policy matches" in reason


def test_deny_is_evaluated_before_allow() -> None:
    allow_all = _allow("everyone", Rule())
    deny = AuthorizationPolicy(
        name="no-reviews-1",
        namespace="default",
        action="DENY",
        rules=[Rule(to=[RuleTo(operation=Operation(paths=["/reviews/1"]))])],
    )
    allowed, policy, _ = _decision(_with(allow_all, deny))
    assert not allowed and policy == "ns[default]-policy[no-reviews-1]-rule[0]"
    allowed, policy, _ = _decision(_with(allow_all, deny), path="/reviews/2")
    assert allowed and policy == "ns[default]-policy[everyone]-rule[0]"


def test_a_principal_rule_does_not_match_another_caller() -> None:
    rule = Rule(from_=[RuleFrom(source=Source(principals=["cluster.local/ns/default/sa/someone-else"]))])
    allowed, _, _ = _decision(_with(_allow("others", rule)))
    assert not allowed


def test_the_ingress_calls_with_its_own_identity_over_mtls() -> None:
    """The gateway's upstream is ISTIO_MUTUAL, so the destination sees its istio-system principal (a pod does not)."""
    rule = Rule(from_=[RuleFrom(source=Source(namespaces=["istio-system"]))])
    config = _with(_allow("from-ingress", rule))
    via_gateway = simulate(config, "gateway", "http://bookinfo.local/productpage", {})
    from_pod = simulate(config, "reviews-v1-0", "http://productpage:9080/", {})
    assert [d.allowed for d in via_gateway.decisions.values()] == [True]
    assert [d.allowed for d in from_pod.decisions.values()] == [False]
