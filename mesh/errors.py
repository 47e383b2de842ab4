"""The exception tree. Every error names the object (file, resource, field) and says what to do next.

MeshError                  an error no more specific class describes (exit 80)
├── UsageError             a name on the command line names nothing (an unknown pod or proxy) (exit 2)
├── PolicyError            a policy module or YAML document is malformed (exit 65)
│   └── ImportFailed       YAML that cannot become typed objects
├── AnalysisFailed         the analyzer found errors; nothing was applied (exit 79)
├── TargetError            a target cannot do what was asked (missing tool, not running) (exit 69)
│   ├── MeshNotRunning
│   │   └── StateCorrupt   the state file is damaged: `mesh down --force` recovers
│   ├── UnknownTarget      --target names no implementation (exit 64)
│   ├── WorkloadChange     `mesh apply` was given workload changes (services, versions, replicas): needs `mesh up`
│   ├── AddressesExhausted no free loopback block for another local mesh
│   └── DeploymentFailed   a Pulumi operation failed; names each failing resource and its message
├── StaleRevision          an apply was computed against an older revision than the mesh runs (exit 75)
├── PushRejected           an Envoy NACKed a push; the previous config keeps serving (exit 76)
│   └── PushTimedOut       a proxy did not ACK in time; rolled back like a NACK (exit 76)
├── InconsistentSnapshot   translation produced a snapshot with dangling references; it was not published (exit 70)
└── GitOpsError            the reconciler cannot reach, fetch or render what git says should run
    ├── SourceError        repo, ref or path missing (exit 66)
    │   └── UnsafeSource   a transport or option that could run commands (exit 65)
    ├── RenderFailed       the policies did not load: raised, hung, exited, ran out of memory (exit 65)
    ├── WebhookMisconfigured  the webhook is on without a secret (exit 78)
    └── TransientError     the remote or the target is unreachable now; retried with backoff (exit 69)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

EXIT_CLI_USAGE = 2  # as click's own usage errors: a bad option, or a name that names nothing
EXIT_NO_ROUTE = 1  # `mesh simulate`: the request matches no route (a valid answer: "no match", as grep exits 1)
EXIT_DRIFT = 3  # `mesh reconcile --no-heal`: what runs differs from git (an answer, reported and left alone)
EXIT_VERIFY_FAILED = (
    4  # `mesh reconcile`: a canary step or the verification failed; the last good config was re-applied
)
EXIT_USAGE = 64
EXIT_BAD_INPUT = 65
EXIT_NO_INPUT = 66  # sysexits EX_NOINPUT: the policies repository, ref or path is missing
EXIT_ANALYSIS = 79
EXIT_TARGET = 69
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE: a bug in meshops itself, not in the user's policies
EXIT_CONFLICT = 75  # sysexits EX_TEMPFAIL: the mesh moved on since the apply's base revision; re-run it
EXIT_REJECTED = 76  # sysexits EX_PROTOCOL: the data plane rejected the push (or never confirmed it); rolled back
EXIT_CONFIG = 78  # sysexits EX_CONFIG: the reconciler's own configuration is incomplete (a webhook without a secret)
EXIT_ERROR = 80  # any other MeshError: its message says what; never 1, which is `mesh simulate`'s "no match"


class Reportable(Protocol):
    """What AnalysisFailed needs of a finding (mesh.analyze.findings.Finding is one); errors sit below analyze."""

    @property
    def level(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class MeshError(Exception):
    exit_code = EXIT_ERROR
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class UsageError(MeshError):
    exit_code = EXIT_CLI_USAGE


class StaleRevision(MeshError):
    """`mesh apply --base-revision N` when the mesh is past N: applying would silently drop what changed since."""

    exit_code = EXIT_CONFLICT


class PolicyError(MeshError):
    exit_code = EXIT_BAD_INPUT


class ImportFailed(PolicyError):
    pass


class AnalysisFailed(MeshError):
    exit_code = EXIT_ANALYSIS

    def __init__(self, findings: Sequence[Reportable]) -> None:
        self.findings = list(findings)
        errors = [f for f in self.findings if f.level == "Error"]
        lines = "\n".join(f"  {f}" for f in errors)
        super().__init__(
            f"analysis found {len(errors)} error(s); nothing was applied:\n{lines}",
            hint="fix the findings above, then run `mesh analyze` to check before applying again",
        )


class TargetError(MeshError):
    exit_code = EXIT_TARGET


class MeshNotRunning(TargetError):
    pass


class StateCorrupt(MeshNotRunning):
    """The state file cannot be read: whether a mesh still runs from it is unknown."""


class UnknownTarget(TargetError):
    exit_code = EXIT_USAGE

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown target {name!r}", hint=f"choose one of: {', '.join(known)}")


class WorkloadChange(TargetError):
    pass


class AddressesExhausted(TargetError):
    pass


class DeploymentFailed(TargetError):
    """`failures` lists (resource type, resource name, the engine's message) for each resource that failed."""

    def __init__(self, message: str, failures: Sequence[tuple[str, str, str]], *, hint: str | None = None) -> None:
        self.failures = list(failures)
        lines = "".join(f"\n  {typ} {name}: {msg}" for typ, name, msg in self.failures)
        super().__init__(message + lines, hint=hint)


class PushRejected(MeshError):
    """One or more proxies NACKed a push. `rejections` maps proxy id -> Envoy's error text."""

    exit_code = EXIT_REJECTED

    def __init__(self, rejections: dict[str, str]) -> None:
        self.rejections = rejections
        lines = "\n".join(f"  {proxy}: {err}" for proxy, err in sorted(rejections.items()))
        super().__init__(
            f"{len(rejections)} proxy(ies) rejected the new config; every proxy keeps serving the previous one:\n{lines}",
            hint="the Envoy error above names the offending field; fix the policy and apply again",
        )


class PushTimedOut(PushRejected):
    """Proxies that neither ACKed nor NACKed within the wait (stopped, hung, disconnected). Every changed proxy was
    pushed the previous config again, so what the control plane records is what runs. `rejections` maps proxy id ->
    its state."""

    def __init__(self, rejections: dict[str, str], wait: float) -> None:
        self.rejections = rejections
        lines = "\n".join(f"  {proxy}: {state}" for proxy, state in sorted(rejections.items()))
        MeshError.__init__(
            self,
            f"{len(rejections)} proxy(ies) did not confirm the new config within {wait:g}s; it was rolled back and "
            f"every proxy keeps (or returns to) the previous one:\n{lines}",
            hint="`mesh status` shows which process is down; apply again once it runs (or with a longer --wait)",
        )


class InconsistentSnapshot(MeshError, ValueError):
    """A snapshot references a resource it does not contain: publishing it would leave Envoy warming forever."""

    exit_code = EXIT_INTERNAL
    hint = "this is a translation bug in meshops: the previous config keeps serving; please report it with the policy"


class GitOpsError(MeshError):
    pass


class SourceError(GitOpsError):
    exit_code = EXIT_NO_INPUT


class UnsafeSource(SourceError):
    exit_code = EXIT_BAD_INPUT


class RenderFailed(GitOpsError):
    exit_code = EXIT_BAD_INPUT


class WebhookMisconfigured(GitOpsError):
    exit_code = EXIT_CONFIG


class TransientError(GitOpsError):
    exit_code = EXIT_TARGET
