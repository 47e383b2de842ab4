"""The supervisor starts in parallel, restarts what crashes, and leaves nothing running."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from mesh.dataplane.supervisor import ProcessSpec, StartupFailed, Supervisor


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def sleeper(tmp: Path, name: str, ready_file: Path | None = None) -> ProcessSpec:
    code = (
        "import pathlib,sys,time\n"
        + (f"pathlib.Path({str(ready_file)!r}).touch()\n" if ready_file else "")
        + "time.sleep(600)"
    )
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-c", code],
        log_path=tmp / f"{name}.log",
        ready=(lambda: ready_file.exists()) if ready_file else (lambda: True),
    )


def test_start_restart_stop_leaves_nothing(tmp_path: Path) -> None:
    sup = Supervisor(on_event=lambda m: None)
    sup.start([sleeper(tmp_path, "a", tmp_path / "a.ready"), sleeper(tmp_path, "b")], timeout=20)
    pids = sup.pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    sup.kill("a")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and next(s for s in sup.status() if s.name == "a").restarts == 0:
        time.sleep(0.05)
    status = {s.name: s for s in sup.status()}
    assert status["a"].restarts == 1
    assert sup.wait_ready("a", lambda: True, timeout=10)
    everything = sup.pids()
    sup.stop()
    assert not any(alive(p) for p in everything + pids)


def test_startup_failure_names_the_process_and_shows_its_log(tmp_path: Path) -> None:
    bad = ProcessSpec(
        name="broken",
        argv=[sys.executable, "-c", "print('config is wrong: port 0'); raise SystemExit(3)"],
        log_path=tmp_path / "broken.log",
        ready=lambda: False,
    )
    good = sleeper(tmp_path, "good")
    sup = Supervisor(on_event=lambda m: None)
    with pytest.raises(StartupFailed) as e:
        sup.start([good, bad], timeout=20)
    assert "broken exited with code 3" in str(e.value) and "config is wrong: port 0" in str(e.value)
    assert not sup.pids()  # the good one was stopped too


def test_children_die_with_the_supervisor_even_on_sigkill(tmp_path: Path) -> None:
    """A supervisor killed with SIGKILL cannot clean up; PR_SET_PDEATHSIG (setpriv) reaps its children."""
    import subprocess
    import textwrap

    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import sys, time, pathlib
        sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        from mesh.dataplane.supervisor import ProcessSpec, Supervisor
        sup = Supervisor(on_event=lambda m: None)
        sup.start([ProcessSpec(name="c", argv=[sys.executable, "-c", "import time; time.sleep(600)"],
                               log_path=pathlib.Path({str(tmp_path / "c.log")!r}), ready=lambda: True)])
        pathlib.Path({str(pidfile)!r}).write_text(str(sup.pids()[0]))
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        parent.kill()


def test_status_answers_while_a_readiness_probe_hangs(tmp_path: Path) -> None:
    """Probes are HTTP calls that can take their whole timeout; `mesh status` must not wait behind one."""
    probing, release = threading.Event(), threading.Event()
    started = threading.Event()

    def ready() -> bool:
        if not started.is_set():
            return True  # the first start is ready at once
        probing.set()
        release.wait(10)
        return True

    sup = Supervisor()
    sup.start([ProcessSpec("a", ["sleep", "30"], tmp_path / "a.log", ready)], timeout=5)
    try:
        started.set()
        sup.kill("a")  # restarted after its backoff, then probed: the probe hangs until released
        assert probing.wait(10), "the restarted process was never probed"
        t0 = time.monotonic()
        statuses = sup.status()
        assert time.monotonic() - t0 < 5.0  # behind the probe it would take the probe's 10 s
        assert [s.name for s in statuses] == ["a"] and statuses[0].restarts == 1
    finally:
        release.set()
        sup.stop()


def test_the_restart_backoff_resets_after_a_healthy_interval(tmp_path: Path) -> None:
    """Item 18: a crash loop backs off (0.1, 0.2, 0.4 ... up to 1 s here); a crash after the process was healthy for
    `healthy_reset` seconds costs the first step again, not the maximum."""
    flag = tmp_path / "healthy"
    events: list[str] = []
    spec = ProcessSpec(
        name="flaky",
        argv=["sh", "-c", f"test -f {flag} && exec sleep 600; exit 3"],
        log_path=tmp_path / "flaky.log",
        ready=lambda: True,
    )
    sup = Supervisor(on_event=events.append, backoff=0.1, backoff_max=1.0, healthy_reset=0.5)
    try:
        sup.start([spec])
        deadline = time.monotonic() + 20
        while sum("flaky exited" in e for e in events) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "restarting in 1.0s" in events[-1], events  # the crash loop reached the maximum
        flag.touch()
        while not (sup.status()[0].running and sup._procs["flaky"].ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.6)  # healthy for longer than healthy_reset
        flag.unlink()
        sup.kill("flaky")
        while "flaky exited (-9)" not in events[-1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events[-1] == "flaky exited (-9); restarting in 0.1s", events
    finally:
        sup.stop()
