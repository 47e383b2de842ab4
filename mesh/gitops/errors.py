"""GitOps errors: each joins the tree in mesh.errors with a hint and an exit code.

MeshError
└── GitOpsError
    ├── SourceError        repo, ref or path missing (exit 66)
    │   └── UnsafeSource   a transport or option that could run commands (exit 65)
    ├── RenderFailed       the policies did not load: raised, hung, exited, ran out of memory (exit 65)
    ├── WebhookMisconfigured  the webhook is on without a secret (exit 78)
    └── TransientError     the remote or the target is unreachable now; retried with backoff (exit 69)
"""

from __future__ import annotations

from mesh.errors import EXIT_BAD_INPUT, EXIT_TARGET, MeshError

EXIT_NO_INPUT = 66
EXIT_CONFIG = 78


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
