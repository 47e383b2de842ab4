"""Loopback blocks: two processes that pick the same random block at once never both get it."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mesh.dataplane.addresses import allocate_block, claim, port_free, release

HOLD = """
import sys
from mesh.dataplane.addresses import claim
print(claim(sys.argv[1]), flush=True)
sys.stdin.read()
"""


def test_a_claim_held_by_another_process_is_refused_and_released_when_it_exits() -> None:
    name = f"test-{uuid.uuid4().hex}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        assert not claim(name)
    finally:
        holder.communicate("")
    try:
        assert claim(name)
        assert not claim(name)  # this process holds it now: a second allocation must pick another
    finally:
        release(name)


def test_two_allocations_with_the_same_random_choices_get_different_blocks() -> None:
    first = allocate_block(rng=random.Random(7))
    second = allocate_block(rng=random.Random(7))
    assert first.b != second.b


def test_claim_locks_live_in_an_owner_only_directory_and_are_removed_on_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    name = f"test-{uuid.uuid4().hex}"
    assert claim(name)
    directory = tmp_path / f"meshops-claims-{os.getuid()}"
    assert (directory / f"{name}.lock").exists()
    assert directory.stat().st_mode & 0o777 == 0o700
    release(name)
    assert not (directory / f"{name}.lock").exists()


def test_a_lock_file_planted_as_a_symlink_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / f"meshops-claims-{os.getuid()}"
    directory.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    name = f"test-{uuid.uuid4().hex}"
    (directory / f"{name}.lock").symlink_to(victim)
    assert not claim(name)  # refused, never opened through the link
    assert victim.read_text() == "keep"


def test_an_untrusted_claims_directory_falls_back_to_the_bind_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened up (or someone else's): its locks could be held or planted by another user, so none are taken."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / f"meshops-claims-{os.getuid()}"
    directory.mkdir()
    directory.chmod(0o777)
    name = f"test-{uuid.uuid4().hex}"
    assert claim(name)
    assert not (directory / f"{name}.lock").exists()


def test_time_wait_left_by_a_closed_listener_is_free_and_a_listener_is_not() -> None:
    """A mesh that just went down leaves TIME_WAIT connections on its ingress address; Envoy would bind there (it
    sets SO_REUSEADDR), so the probe must not call the address taken. A live listener still is."""
    ip = allocate_block().gateway_ip
    server = socket.create_server((ip, 0))
    port = server.getsockname()[1]
    assert not port_free(ip, port)
    client = socket.create_connection((ip, port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first, so its ip:port goes to TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    wait = subprocess.run(["ss", "-Htan", "state", "time-wait", "src", f"{ip}:{port}"], capture_output=True, text=True)
    assert wait.stdout.strip(), "the test needs a TIME_WAIT socket on the address"
    assert port_free(ip, port)
