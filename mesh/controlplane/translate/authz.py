"""AuthorizationPolicy -> the inbound `envoy.filters.http.rbac` filters (DENY before ALLOW, as Istio orders them).

No ALLOW policy on a workload allows everything; ALLOW policies whose rules match nothing deny everything.
Denied requests get 403 "RBAC: access denied".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from mesh.api.security import AuthorizationPolicy, Condition, Operation, Rule, Source
from mesh.controlplane.translate.protos import packed
from mesh.istio.protocol import tcp_rule

RBAC_FILTER = "envoy.filters.http.rbac"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"


def _glob(value: str, *, spiffe: bool = False) -> string_pb2.StringMatcher:
    """Istio's string forms: `*` (present), `prefix*`, `*suffix`, exact; principals gain `spiffe://`."""
    pre = "spiffe://" if spiffe else ""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=pre + value[:-1])
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    return string_pb2.StringMatcher(exact=pre + value)


def _any_of(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=ids))


def _any_perm(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return perms[0] if len(perms) == 1 else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=perms))


def _cidr(block: str) -> address_pb2.CidrRange:
    ip, _, plen = block.partition("/")
    return address_pb2.CidrRange(address_prefix=ip, prefix_len={"value": int(plen or (128 if ":" in ip else 32))})


def _principal(src: Source) -> rbac_pb2.Principal:
    ands: list[rbac_pb2.Principal] = []

    def auth(v: str) -> rbac_pb2.Principal:
        return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=_glob(v, spiffe=True)))

    def ns(v: str) -> rbac_pb2.Principal:
        m = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=f".*/ns/{v}/.*"))
        return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=m))

    def ip(v: str) -> rbac_pb2.Principal:
        return rbac_pb2.Principal(direct_remote_ip=_cidr(v))

    for values, make, negate in (
        (src.principals, auth, False),
        (src.not_principals, auth, True),
        (src.namespaces, ns, False),
        (src.not_namespaces, ns, True),
        (src.ip_blocks, ip, False),
        (src.not_ip_blocks, ip, True),
    ):
        if values:
            p = _any_of([make(v) for v in values])
            ands.append(rbac_pb2.Principal(not_id=p) if negate else p)
    if not ands:
        return rbac_pb2.Principal(any=True)
    return ands[0] if len(ands) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ands))


def _header(name: str, value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=rc.HeaderMatcher(name=name, string_match=_glob(value)))


def _permission(op: Operation | None, conditions: list[Condition]) -> rbac_pb2.Permission:
    ands: list[rbac_pb2.Permission] = []

    def path(v: str) -> rbac_pb2.Permission:
        return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=_glob(v)))

    def port(v: str) -> rbac_pb2.Permission:
        return rbac_pb2.Permission(destination_port=int(v))

    def method(v: str) -> rbac_pb2.Permission:
        return _header(":method", v)

    def host(v: str) -> rbac_pb2.Permission:
        m = _glob(v)
        m.ignore_case = True
        return rbac_pb2.Permission(header=rc.HeaderMatcher(name=":authority", string_match=m))

    if op is not None:
        for values, make, negate in (
            (op.methods, method, False),
            (op.not_methods, method, True),
            (op.paths, path, False),
            (op.not_paths, path, True),
            (op.ports, port, False),
            (op.not_ports, port, True),
            (op.hosts, host, False),
            (op.not_hosts, host, True),
        ):
            if values:
                p = _any_perm([make(v) for v in values])
                ands.append(rbac_pb2.Permission(not_rule=p) if negate else p)
    for c in conditions:
        if c.key.startswith("request.headers[") and c.key.endswith("]"):
            name = c.key[len("request.headers[") : -1].lower()
            if c.values:
                ands.append(_any_perm([_header(name, v) for v in c.values]))
            if c.not_values:
                ands.append(rbac_pb2.Permission(not_rule=_any_perm([_header(name, v) for v in c.not_values])))
        elif c.key == "destination.port":
            if c.values:
                ands.append(_any_perm([port(v) for v in c.values]))
            if c.not_values:
                ands.append(rbac_pb2.Permission(not_rule=_any_perm([port(v) for v in c.not_values])))
    if not ands:
        return rbac_pb2.Permission(any=True)
    return ands[0] if len(ands) == 1 else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=ands))


_SOURCE_CONDITIONS = {"source.principal": "principals", "source.namespace": "namespaces", "source.ip": "ip_blocks"}


def _policy(rule: Rule) -> rbac_pb2.Policy:
    sources = [f.source for f in rule.from_]
    ops = [t.operation for t in rule.to]
    # request.headers and destination.* conditions constrain the request; source.* ones the caller.
    req_conds = [c for c in rule.when if not c.key.startswith("source.")]
    src_conds = [c for c in rule.when if c.key.startswith("source.")]
    permissions = [_permission(op, req_conds) for op in ops] or [_permission(None, req_conds)]
    principals = [_principal(s) for s in sources] or [rbac_pb2.Principal(any=True)]
    for c in src_conds:
        field = _SOURCE_CONDITIONS.get(c.key)
        if field is None:
            continue  # the analyzer reports unsupported condition keys for the target (MSH0100)
        cond = _principal(Source(**{field: c.values, f"not_{field}": c.not_values}))
        principals = [rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[p, cond])) for p in principals]
    return rbac_pb2.Policy(permissions=[_any_perm(permissions)], principals=[_any_of(principals)])


def _rbac_by_action(
    policies: list[AuthorizationPolicy], applied: Callable[[Rule, str], Rule | None]
) -> Iterator[tuple[str, rbac_pb2.RBAC]]:
    """DENY first, then ALLOW: one RBAC per action some policy has, each rule named as Istio names it; `applied`
    gives the rule as this chain applies it (None: it matches nothing here and is left out)."""
    for action, envoy_action in (("DENY", rbac_pb2.RBAC.DENY), ("ALLOW", rbac_pb2.RBAC.ALLOW)):
        chosen = [p for p in policies if p.action == action]
        if not chosen:
            continue
        rbac = rbac_pb2.RBAC(action=envoy_action)
        for ap in chosen:
            for i, rule in enumerate(ap.rules):
                rule_here = applied(rule, action)
                if rule_here is not None:
                    rbac.policies[f"ns[{ap.namespace}]-policy[{ap.name}]-rule[{i}]"].CopyFrom(_policy(rule_here))
        yield action, rbac


def rbac_filters(policies: list[AuthorizationPolicy]) -> list[hcm.HttpFilter]:
    """Zero, one or two RBAC filters for the inbound HTTP chain: DENY first, then ALLOW."""
    return [
        hcm.HttpFilter(name=f"{RBAC_FILTER}.{action.lower()}", typed_config=packed(rbac_filter.RBAC(rules=rbac)))
        for action, rbac in _rbac_by_action(policies, lambda rule, _action: rule)
    ]


def network_rbac_filters(policies: list[AuthorizationPolicy], port: int, stat_prefix: str) -> list[lc.Filter]:
    """The same policies for a TCP port's inbound chains (`envoy.filters.network.rbac`), each rule as Istio
    applies it to a connection (`mesh.istio.protocol.tcp_rule`: an ALLOW rule with HTTP-only fields matches no
    connection): a denied connection is closed at once."""
    return [
        lc.Filter(
            name=f"{NETWORK_RBAC_FILTER}.{action.lower()}",
            typed_config=packed(network_rbac.RBAC(rules=rbac, stat_prefix=f"{stat_prefix}.")),
        )
        for action, rbac in _rbac_by_action(policies, tcp_rule)
    ]
