"""`mesh reconcile` and `mesh diff`: GitOps from the command line. Thin over mesh.gitops."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from mesh.cli import cli
from mesh.cli.tables import table
from mesh.errors import (
    EXIT_ANALYSIS,
    EXIT_BAD_INPUT,
    EXIT_DRIFT,
    EXIT_REJECTED,
    EXIT_TARGET,
    EXIT_VERIFY_FAILED,
    TargetError,
)

# The reconciler (git, HTTP, pydantic models) loads inside the commands that use it, so `mesh --help` stays instant.
if TYPE_CHECKING:
    from mesh.gitops.reconciler import Reconciler, Result
    from mesh.gitops.state import StateStore
    from mesh.gitops.triggers import WebhookConfig
    from mesh.targets.base import Target

DEFAULT_POLL = 15.0  # mesh.gitops.daemon.DEFAULT_POLL (a unit test keeps the two equal)

F = TypeVar("F", bound=Callable[..., Any])

EXITS = """\b
Exit codes:
  0   applied, unchanged or healed          65  policies do not load / unsafe source
  3   drift reported (--no-heal)            66  repository, ref or path missing
  4   verification or canary failed:        69  target or git remote unreachable
      the last good config re-applied       76  the data plane rejected the push
  78  webhook enabled without a secret      79  analysis errors: nothing applied
  80  any other error (the message says)
Set MESH_DEBUG=1 to see tracebacks."""

_RESULT_EXIT = {
    "failed analysis": EXIT_ANALYSIS,
    "failed render": EXIT_BAD_INPUT,
    "failed signature": EXIT_BAD_INPUT,
    "rolled back": EXIT_VERIFY_FAILED,
    "failed verification": EXIT_VERIFY_FAILED,
    "failed apply": EXIT_REJECTED,
}


def source_options(f: F) -> F:
    options = [
        click.option("--env", "-e", default="dev", show_default=True, envvar="MESH_ENV", help="Environment to build."),
        click.option(
            "--repo",
            envvar="MESH_GITOPS_REPO",
            help="Policies repository: a local path, a bare repository, or a URL. Env: MESH_GITOPS_REPO.",
        ),
        click.option(
            "--ref",
            default="main",
            show_default=True,
            envvar="MESH_GITOPS_REF",
            help="Branch to follow, or a tag pattern (e.g. 'v*': the newest matching tag) for promotion.",
        ),
        click.option(
            "--path",
            "path",
            default="policies",
            show_default=True,
            envvar="MESH_GITOPS_PATH",
            help="Directory in the repository: a policies package (build(env)) or Istio YAML files.",
        ),
        click.option(
            "--target",
            "target_name",
            default="local",
            show_default=True,
            envvar="MESH_TARGET",
            type=click.Choice(["local", "kubernetes"]),
            help="kubernetes: the cluster of MESH_KUBECONFIG, or the one this pod runs in (its service account).",
        ),
        click.option(
            "--state-dir",
            default=".meshops",
            show_default=True,
            envvar="MESH_STATE_DIR",
            type=click.Path(file_okay=False),
            help="The local mesh's state directory; the reconciler keeps gitops/ inside it.",
        ),
        click.option("--no-heal", is_flag=True, help="Report drift from the last applied commit, do not heal it."),
        click.option("--no-verify", is_flag=True, help="Skip data-path verification (not recommended)."),
        click.option(
            "--keyring",
            default=None,
            type=click.Path(exists=True, file_okay=False),
            help="A GNUPGHOME: apply only commits whose signature verifies against its keys (git verify-commit).",
        ),
        click.option("--timeout", default=20.0, show_default=True, help="Seconds a policies module may run."),
        click.option("--memory-mb", default=1024, show_default=True, help="Address space a policies module may use."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _target(name: str, state_dir: str) -> Target:
    if name == "kubernetes":
        from mesh.targets.kubernetes.target import KubernetesTarget

        return KubernetesTarget()
    try:
        module = importlib.import_module("mesh.targets.local.target")
        options = importlib.import_module("mesh.targets.local.options")
    except ImportError:
        raise TargetError(f"the {name} target is not available in this build") from None
    return cast("Target", module.LocalTarget(options.LocalOptions(state_dir=Path(state_dir))))


def _store(state_dir: str) -> StateStore:
    from mesh.gitops.state import StateStore

    return StateStore(Path(state_dir) / "gitops" / "state.db")


def _reconciler(kw: dict[str, Any], progress: Callable[[str], None]) -> Reconciler:
    from mesh.errors import SourceError
    from mesh.gitops.github import GitHubStatus
    from mesh.gitops.reconciler import Reconciler, Settings
    from mesh.gitops.render import Limits
    from mesh.gitops.source import SourceSpec, check_url

    if not kw["repo"]:
        raise SourceError("no policies repository given", hint="pass --repo PATH_OR_URL (or set MESH_GITOPS_REPO)")
    spec = SourceSpec(env=kw["env"], repo=kw["repo"], ref=kw["ref"], path=kw["path"])
    check_url(spec.repo)  # a missing repository is reported before the target is contacted
    token = os.environ.get("GITHUB_TOKEN")
    gh_repo = kw.get("github_repo")
    settings = Settings(
        heal=not kw["no_heal"],
        verify=not kw["no_verify"],
        limits=Limits(timeout=kw["timeout"], memory=kw["memory_mb"] << 20),
        keyring=Path(kw["keyring"]).resolve() if kw.get("keyring") else None,
        github=GitHubStatus(repo=gh_repo, token=token) if token and gh_repo else None,
    )
    target = _target(kw["target_name"], kw["state_dir"])
    cache = Path(kw["state_dir"]) / "gitops" / "cache"
    return Reconciler(spec, target, _store(kw["state_dir"]), cache, settings, progress)


def _say(line: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)


def _print_result(r: Result) -> None:
    sha = r.sha[:12] if r.sha else "-"
    click.echo(f"{r.env}: {r.action} {sha} {r.reason}".rstrip())
    for c in r.diff:
        click.echo(f"  {c['op']} {c['ref']}")


def _exit_for(r: Result) -> int:
    if r.action == "transient":
        return EXIT_TARGET
    if r.action == "drift":
        return EXIT_DRIFT
    return _RESULT_EXIT.get(r.outcome or "", 0)


@cli.group(
    "reconcile",
    invoke_without_command=True,
    epilog=EXITS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@source_options
@click.option("--poll", default=DEFAULT_POLL, show_default=True, help="Seconds between polls (jittered +-20%).")
@click.option("--listen", default=None, help="HOST:PORT for the GitHub webhook (/webhook) and /metrics.")
@click.option(
    "--webhook-secret-file",
    type=click.Path(dir_okay=False, exists=True),
    envvar="MESH_WEBHOOK_SECRET_FILE",
    help="File with the webhook secret (also: MESH_WEBHOOK_SECRET). Required with --listen.",
)
@click.option(
    "--github-repo",
    default=None,
    help="owner/name: accept webhooks only from it; with GITHUB_TOKEN, post commit statuses.",
)
@click.pass_context
def reconcile_group(ctx: click.Context, /, **kw: Any) -> None:
    """Keep an environment's mesh equal to a git ref, and prove every change on the data path.

    \b
    Each new commit: render -> analyze -> diff -> apply -> verify -> record.
    A commit that fails analysis is never applied; one that fails verification is rolled
    back to the last good commit and not retried until you say so (`retry SHA`).

    \b
    Run in the foreground (Ctrl-C stops it), reacting to pushes at once through the hook:
      mesh up --detach
      mesh reconcile install-hook --repo /srv/git/policies.git
      mesh reconcile --repo /srv/git/policies.git --env dev
    \b
    With the GitHub webhook (secret in a file) and metrics on :9900:
      mesh reconcile --repo https://github.com/acme/policies --github-repo acme/policies \\
        --listen 0.0.0.0:9900 --webhook-secret-file /etc/meshops/webhook-secret
    \b
    Promotion to prod by tag: follow the newest tag matching a pattern:
      mesh reconcile --repo ... --env prod --ref 'v*'
    """
    ctx.ensure_object(dict)
    if ctx.invoked_subcommand is not None:
        return
    _daemon(kw)


def _webhook(kw: dict[str, Any]) -> WebhookConfig | None:
    from mesh.errors import WebhookMisconfigured
    from mesh.gitops.triggers import WebhookConfig

    if not kw["listen"]:
        return None
    secret = os.environ.get("MESH_WEBHOOK_SECRET", "")
    if kw["webhook_secret_file"]:
        secret = Path(kw["webhook_secret_file"]).read_text().strip()
    if not secret:
        raise WebhookMisconfigured(
            "--listen enables the GitHub webhook, but no secret is configured",
            hint="set --webhook-secret-file FILE (or MESH_WEBHOOK_SECRET) to the secret configured on GitHub",
        )
    return WebhookConfig(secret=secret.encode(), envs={kw["env"]: kw["ref"]}, repo=kw["github_repo"])


def _daemon(kw: dict[str, Any]) -> None:
    from mesh.gitops.daemon import Daemon, DaemonSettings

    webhook = _webhook(kw)
    reconciler = _reconciler(kw, _say)
    reconciler.source.remote_ref()  # a missing repo or ref is an error now, not a log line every poll
    listen = None
    if kw["listen"]:
        host, _, port = kw["listen"].rpartition(":")
        listen = (host or "127.0.0.1", int(port))
    sock = Path(kw["state_dir"]) / "gitops" / "hook.sock"
    settings = DaemonSettings(poll=kw["poll"], listen=listen, webhook=webhook, hook_socket=sock)
    daemon = Daemon([reconciler], settings, lambda r: _say(f"{r.env}: {r.action} {(r.sha or '')[:12]} {r.reason}"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    daemon.start()
    where = f", webhook + /metrics on http://{daemon.address[0]}:{daemon.address[1]}" if daemon.address else ""
    _say(f"reconciling {kw['env']} from {kw['repo']} ({kw['ref']}:{kw['path']}), polling every {kw['poll']:g}s{where}")
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        daemon.shutdown()


@reconcile_group.command("once")
@source_options
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def once_cmd(output: str, **kw: Any) -> None:
    """Reconcile the newest commit once and exit (for CI, cron, or trying it out).

    \b
      mesh reconcile once --repo ../policies --env dev
    """
    result = _reconciler(kw, _say if output == "text" else lambda _: None).reconcile()
    click.echo(result.model_dump_json(indent=2)) if output == "json" else _print_result(result)
    sys.exit(_exit_for(result))


@reconcile_group.command("retry")
@source_options
@click.argument("sha")
def retry_cmd(sha: str, **kw: Any) -> None:
    """Try a commit again that failed (e.g. after fixing what its verification found).

    \b
      mesh reconcile retry 3f2a9c1d --repo ../policies --env dev
    """
    r = _reconciler(kw, _say)
    r.source.fetch()
    full = r.source.resolve(sha)
    result = r.reconcile(retry_sha=full)
    _print_result(result)
    sys.exit(_exit_for(result))


@reconcile_group.command("status")
@click.option("--state-dir", default=".meshops", show_default=True, envvar="MESH_STATE_DIR")
@click.option("--env", "-e", default=None, help="Only this environment.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status_cmd(state_dir: str, env: str | None, output: str) -> None:
    """Conditions per environment (Ready / Reconciling / Stalled with reasons), like Flux's.

    \b
      mesh reconcile status
      mesh reconcile status -o json
    """
    from mesh.gitops.status import env_status

    store = _store(state_dir)
    envs = [env] if env else [e.env for e in store.environments()]
    statuses = [env_status(store, e) for e in envs]
    if output == "json":
        click.echo(json.dumps([s.model_dump() for s in statuses], indent=2))
        return
    if not statuses:
        click.echo("no environment reconciled yet (run `mesh reconcile` or `mesh reconcile once`)")
        return
    rows = []
    for s in statuses:
        ready = s.conditions[0]
        stalled = next(c for c in s.conditions if c.type == "Stalled")
        reconciling = next(c for c in s.conditions if c.type == "Reconciling")
        rows.append(
            [
                s.env,
                (s.last_applied or "-")[:12],
                (s.last_attempted or "-")[:12],
                f"{ready.status} ({ready.reason})",
                reconciling.status,
                stalled.status,
                ready.message,
            ]
        )
    click.echo(table(["ENV", "APPLIED", "ATTEMPTED", "READY", "RECONCILING", "STALLED", "MESSAGE"], rows))


@reconcile_group.command("history")
@click.option("--state-dir", default=".meshops", show_default=True, envvar="MESH_STATE_DIR")
@click.option("--env", "-e", default=None, help="Only this environment.")
@click.option("--limit", "-n", default=20, show_default=True)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def history_cmd(state_dir: str, env: str | None, limit: int, output: str) -> None:
    """Every attempt: commit, outcome, per-phase timings, and why it failed (findings, evidence)."""
    attempts = _store(state_dir).attempts(env, limit)
    if output == "json":
        click.echo(json.dumps([a.model_dump() for a in attempts], indent=2))
        return
    rows = []
    for a in attempts:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.started))
        total = f"{sum(a.phases.values()) / 1000:.1f}s" if a.phases else "-"
        rows.append([when, a.env, a.sha[:12], a.outcome, total, (a.reason or a.message)[:90]])
    click.echo(table(["STARTED", "ENV", "COMMIT", "OUTCOME", "TOOK", "DETAIL"], rows))


@reconcile_group.command("install-hook")
@click.option("--repo", required=True, type=click.Path(exists=True, file_okay=False), help="The bare repository.")
@click.option("--state-dir", default=".meshops", show_default=True, envvar="MESH_STATE_DIR")
def install_hook_cmd(repo: str, state_dir: str) -> None:
    """Install a post-receive hook so `git push` to this repository reconciles at once.

    \b
      mesh reconcile install-hook --repo /srv/git/policies.git
    """
    from mesh.gitops.triggers import install_hook

    hook = install_hook(Path(repo), Path(state_dir) / "gitops" / "hook.sock")
    click.echo(f"installed {hook}: pushes now notify the reconciler running with --state-dir {state_dir}")


@cli.command("diff", epilog=EXITS)
@source_options
def diff_cmd(**kw: Any) -> None:
    """What applying the newest commit of the ref would change in the running mesh (git vs live).

    \b
      mesh diff --repo ../policies --env dev
    """
    from mesh.gitops.render import keep_workloads, render

    r = _reconciler(kw, lambda _: None)
    rev = r.source.fetch()
    rendered = render(r.source.materialise(rev.sha), ".", r.env, r.settings.limits)
    from mesh.compile.diff import diff_configs

    live = r.target.live_config()
    changes = diff_configs(live, keep_workloads(rendered.config, live))
    click.echo(f"{r.env}: {rev.ref}@{rev.sha[:12]} vs live: {len(changes)} change(s)")
    for c in changes:
        click.echo(f"{c.op} {c.ref}")
        if c.patch:
            click.echo(c.patch.rstrip())
