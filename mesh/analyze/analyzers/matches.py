"""IST0130/IST0131/IST0106: rules shadowed by earlier rules, and regexes Envoy (RE2) would reject."""

from __future__ import annotations

import re
from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.networking import HTTPMatchRequest, StringMatch

_RE2_UNSUPPORTED = [
    (re.compile(r"\(\?[=!]"), "lookahead"),
    (re.compile(r"\(\?<[=!]"), "lookbehind"),
    (re.compile(r"\\[1-9]"), "backreference"),
    (re.compile(r"\(\?P=\w+\)"), "named backreference"),
    (re.compile(r"(?<!\\)[*+?}]\+"), "possessive quantifier"),
]


def regex_problem(pattern: str) -> str | None:
    """Why Envoy's RE2 engine would reject `pattern`, or None."""
    for rx, what in _RE2_UNSUPPORTED:
        if rx.search(pattern):
            return f"RE2 (Envoy's regex engine) does not support {what}"
    try:
        re.compile(pattern)
    except re.error as e:
        return f"invalid regex: {e}"
    return None


def _string_matches(m: HTTPMatchRequest) -> Iterator[tuple[str, StringMatch]]:
    for name in ("uri", "scheme", "method", "authority"):
        sm = getattr(m, name)
        if sm is not None:
            yield name, sm
    for group in ("headers", "query_params", "without_headers"):
        wire = {"headers": "headers", "query_params": "queryParams", "without_headers": "withoutHeaders"}[group]
        for k, sm in getattr(m, group).items():
            yield f"{wire}.{k}", sm


@analyzer("virtualservice.regex", "Regexes compile under RE2", ("IST0106",))
def regexes(ctx: Context) -> Iterator[Finding]:
    for vs in ctx.config.virtual_services:
        for i, rule in enumerate(vs.http):
            for j, m in enumerate(rule.match):
                for where, sm in _string_matches(m):
                    if sm.regex is not None and (why := regex_problem(sm.regex)):
                        yield finding(
                            "IST0106",
                            path=f"spec.http[{i}].match[{j}].{where}.regex",
                            detail=f"{sm.regex!r}: {why}",
                            **at(vs),
                        )
            if rule.cors_policy:
                for k, sm in enumerate(rule.cors_policy.allow_origins):
                    if sm.regex is not None and (why := regex_problem(sm.regex)):
                        yield finding(
                            "IST0106",
                            path=f"spec.http[{i}].corsPolicy.allowOrigins[{k}].regex",
                            detail=f"{sm.regex!r}: {why}",
                            **at(vs),
                        )


def _is_catch_all(m: HTTPMatchRequest) -> bool:
    wire = m.to_istio()
    wire.pop("name", None)
    return not wire or wire == {"uri": {"prefix": "/"}}


def covers(earlier: HTTPMatchRequest, later: HTTPMatchRequest) -> bool:
    """True when every request `later` matches is also matched by `earlier` (conservative)."""
    a, b = earlier.to_istio(), later.to_istio()
    a.pop("name", None)
    b.pop("name", None)
    if _is_catch_all(earlier) or a == b:
        return True
    # `earlier` constrains only the URI by prefix: `later` is covered if its URI is inside that prefix.
    if set(a) == {"uri"} and "prefix" in a["uri"] and "uri" in b:
        if earlier.ignore_uri_case:
            return False
        p = a["uri"]["prefix"]
        lu = b["uri"]
        return any(k in lu and lu[k].startswith(p) for k in ("prefix", "exact")) and not later.ignore_uri_case
    return False


@analyzer("virtualservice.reachability", "No rule or match is shadowed by an earlier rule", ("IST0130", "IST0131"))
def unreachable(ctx: Context) -> Iterator[Finding]:
    for vs in ctx.config.virtual_services:
        earlier: list[tuple[int, HTTPMatchRequest | None]] = []
        for i, rule in enumerate(vs.http):
            matches: list[HTTPMatchRequest | None] = list(rule.match) or [None]
            shadowed = []
            for j, m in enumerate(matches):
                for k, e in earlier:
                    if e is None or (m is not None and covers(e, m)):
                        shadowed.append((j, k))
                        break
            if shadowed and len(shadowed) == len(matches):
                k = shadowed[0][1]
                yield finding(
                    "IST0130",
                    path=f"spec.http[{i}]",
                    why=f"rule spec.http[{k}] matches every request it would",
                    **at(vs),
                )
            else:
                for j, k in shadowed:
                    yield finding(
                        "IST0131",
                        path=f"spec.http[{i}].match[{j}]",
                        why=f"rule spec.http[{k}] already matches it",
                        **at(vs),
                    )
            earlier.extend((i, m) for m in matches)
