"""IST0130/IST0131/IST0106: rules shadowed by earlier rules, and regexes Envoy (RE2) would reject."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api._base import IstioModel
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


def _wire(m: HTTPMatchRequest) -> dict[str, Any]:
    """A match as Istio compares them: its wire form without `name`, and `uri: {prefix: /}` meaning no URI."""
    wire = m.to_istio()
    wire.pop("name", None)
    if wire.get("uri") == {"prefix": "/"}:
        del wire["uri"]
    return wire


def _implies(later: Any, earlier: Any) -> bool:
    """Whether a StringMatch (wire form) `later` only accepts values `earlier` accepts."""
    if later == earlier:
        return True
    if isinstance(earlier, dict) and isinstance(later, dict) and set(earlier) == {"prefix"}:
        value = later.get("exact", later.get("prefix"))
        return isinstance(value, str) and value.startswith(earlier["prefix"])
    return False


_STRING_MATCHES = ("uri", "scheme", "method", "authority")
_MAPS = ("headers", "queryParams")


def covers(earlier: HTTPMatchRequest, later: HTTPMatchRequest) -> bool:
    """True when every request `later` matches is also matched by `earlier` (conservative: False when unsure).

    Each condition of `earlier` must be implied by the same condition of `later`: a URI, method, authority or
    scheme prefix by a longer prefix or an exact value (`GET /api` covers `GET /api/v2`); each header and query
    parameter likewise; anything else (ports, labels, gateways, withoutHeaders, case) must be equal."""
    a, b = _wire(earlier), _wire(later)
    if a.get("ignoreUriCase") != b.get("ignoreUriCase"):
        return False
    for key, cond in a.items():
        if key not in b:
            return False
        if key in _STRING_MATCHES:
            ok = _implies(b[key], cond)
        elif key in _MAPS:
            ok = all(k in b[key] and _implies(b[key][k], v) for k, v in cond.items())
        elif key == "sourceLabels":
            ok = cond.items() <= b[key].items()
        else:
            ok = cond == b[key]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class _Seen:
    """An earlier match clause: its rule and, when it has one, its index in that rule."""

    rule: int
    match: int | None
    clause: Any  # HTTPMatchRequest | L4MatchAttributes | TLSMatchAttributes | None (a rule without matches)

    def where(self, kind: str) -> str:
        return f"spec.{kind}[{self.rule}]" + (f".match[{self.match}]" if self.match is not None else "")


def _shadowing(
    kind: str, rules: Sequence[Sequence[Any]], covered: Callable[[Any, Any], bool]
) -> Iterator[tuple[str, str, str]]:
    """(code, path, why) for each rule every earlier clause shadows (IST0130) and each shadowed match (IST0131).

    Istio's rules: after a rule without matches nothing is reachable; a match equal to (or, for HTTP, covered by)
    any earlier match, in an earlier rule or earlier in the same rule, is ineffective."""
    seen: list[_Seen] = []
    for i, matches in enumerate(rules):
        clauses: list[tuple[int | None, Any]] = list(enumerate(matches)) or [(None, None)]
        shadowed: list[tuple[int | None, _Seen]] = []
        for j, m in clauses:
            by = next((e for e in seen if e.clause is None or (m is not None and covered(e.clause, m))), None)
            if by is not None:
                shadowed.append((j, by))
            seen.append(_Seen(i, j, m))
        if shadowed and len(shadowed) == len(clauses):
            by = shadowed[0][1]
            yield "IST0130", f"spec.{kind}[{i}]", f"{by.where(kind)} matches every request it would"
        else:
            for j, by in shadowed:
                yield "IST0131", f"spec.{kind}[{i}].match[{j}]", f"{by.where(kind)} already matches it"


def _equal(earlier: IstioModel, later: IstioModel) -> bool:
    return earlier.to_istio() == later.to_istio()


@analyzer("virtualservice.reachability", "No rule or match is shadowed by an earlier one", ("IST0130", "IST0131"))
def unreachable(ctx: Context) -> Iterator[Finding]:
    for vs in ctx.config.virtual_services:
        found = [
            *_shadowing("http", [r.match for r in vs.http], covers),
            *_shadowing("tcp", [r.match for r in vs.tcp], _equal),
            *_shadowing("tls", [r.match for r in vs.tls], _equal),
        ]
        for code, path, why in found:
            yield finding(code, path=path, why=why, **at(vs))
