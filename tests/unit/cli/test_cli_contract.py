"""The CLI contract a newcomer relies on: the README agrees with the shipped policies, `make help` lists every
target, exit codes are the documented ones."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mesh.compile import build_policies
from mesh.dataplane.procs import process_start
from mesh.dataplane.supervisor import ProcessStatus
from mesh.errors import EXIT_CLI_USAGE
from mesh.targets.local.api import StateFile
from mesh.targets.local.control import write_state

ROOT = Path(__file__).resolve().parents[3]


def _canary(env: str) -> dict[str, int]:
    vs = next(r for r in build_policies(env).virtual_services if r.name == "reviews")
    route = next(r for r in vs.http if r.name == "canary")
    return {d.destination.subset or "": d.weight or 0 for d in route.route}


def test_the_readme_states_the_canary_weights_the_shipped_policies_run() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"runs at (\d+)/(\d+) in `dev` and (\d+)/(\d+) in `prod`", readme)
    assert m, "the README no longer states the sample's canary weights"
    dev, prod = (int(m[1]), int(m[2])), (int(m[3]), int(m[4]))
    assert (_canary("dev")["v1"], _canary("dev")["v3"]) == dev
    assert (_canary("prod")["v1"], _canary("prod")["v3"]) == prod
    assert '{"v1": 90, "v3": 10}' not in readme  # the example computes the split from the environment


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = {t for t in re.findall(r"^([A-Za-z0-9_-]+):", makefile, re.M) if t != "help"}
    listed = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    names = {line.split("\t")[0] for line in listed.stdout.splitlines()}
    assert targets <= names, targets - names


def _mesh(*args: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_STATE_DIR": str(state)} if state else None
    return subprocess.run([sys.executable, "-m", "mesh", *args], capture_output=True, text=True, env=env, timeout=60)


def _running_mesh(state: Path, processes: Sequence[ProcessStatus] = ()) -> None:
    """A state file naming this (live, ours) process: it stands in for a running mesh."""
    write_state(
        state,
        StateFile(
            pid=os.getpid(),
            pid_start=process_start(os.getpid()) or 0,
            ingress="http://x",
            ca="c",
            revision=1,
            started_at=0,
            api="unix:/nonexistent",
            token="t",
            processes=list(processes),
        ),
    )


def test_unknown_proxy_and_process_names_are_usage_errors(tmp_path: Path) -> None:
    """A state file naming this (live, ours) process stands in for a running mesh: names are checked first."""
    _running_mesh(tmp_path)
    for args in (("proxy-config", "routes", "nope-v1-0"), ("logs", "nope-v1-0")):
        out = _mesh(*args, state=tmp_path)
        assert out.returncode == EXIT_CLI_USAGE, (args, out.stderr)
        assert "nope-v1-0" in out.stderr and "Traceback" not in out.stderr


def test_simulate_from_an_unknown_pod_is_a_usage_error() -> None:
    out = _mesh("simulate", "--from", "nope-v1-0", "http://reviews:9080/")
    assert out.returncode == EXIT_CLI_USAGE and "no pod 'nope-v1-0'" in out.stderr


def _simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return _mesh("simulate", *args)


def test_simulate_shows_fault_values_and_accepts_pod_dot_namespace() -> None:
    out = _simulate("--from", "reviews-v2-0.default", "-H", "x-chaos: abort", "http://ratings:9080/ratings")
    assert out.returncode == 0, out.stderr
    assert "fault abort:  HTTP 503 for 100% of requests" in out.stdout
    delay = _simulate("--from", "reviews.default", "-H", "x-chaos: delay", "http://ratings:9080/ratings")
    assert "fault delay:  1s for 100% of requests" in delay.stdout


def test_simulate_merges_a_file_over_the_environment_and_shows_per_try_timeouts(tmp_path: Path) -> None:
    f = tmp_path / "reviews-v2.yaml"
    f.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n"
        "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n"
        "    retries: {attempts: 3, perTryTimeout: 2s}\n"
    )
    out = _simulate("-f", str(f), "--from", "productpage-v1-0", "http://reviews:9080/reviews")
    assert out.returncode == 0, out.stderr
    assert "|v2|reviews" in out.stdout and "per-try timeout 2s" in out.stdout
    # the rest of the environment is still there: the ratings chaos route
    chaos = _simulate("-f", str(f), "--from", "reviews-v2-0", "-H", "x-chaos: abort", "http://ratings:9080/ratings")
    assert "fault abort" in chaos.stdout


def test_logs_follow_ends_quietly_on_ctrl_c(tmp_path: Path) -> None:
    """`mesh logs -f` ends with Ctrl-C: exit 0, no traceback, no "Aborted!"."""
    import signal
    import time

    log = tmp_path / "app-x.log"
    log.write_text("x listening on /sock\n")
    _running_mesh(
        tmp_path, [ProcessStatus(name="app/x-v1-0", kind="app", pid=1, running=True, restarts=0, log=str(log))]
    )
    env = {**os.environ, "MESH_STATE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh", "logs", "x-v1-0", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    try:
        assert "listening on" in proc.stdout.readline() + proc.stdout.readline()  # the header, then the line
        with log.open("a") as f:
            f.write("a new line\n")
        deadline = time.monotonic() + 20
        while "a new line" not in proc.stdout.readline() and time.monotonic() < deadline:
            pass
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Aborted" not in err
