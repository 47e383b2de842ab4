"""Loopback blocks: two processes that pick the same random block at once never both get it."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid

from mesh.dataplane.addresses import allocate_block, claim

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
    assert claim(name)
    assert not claim(name)  # this process holds it now: a second allocation must pick another


def test_two_allocations_with_the_same_random_choices_get_different_blocks() -> None:
    first = allocate_block(rng=random.Random(7))
    second = allocate_block(rng=random.Random(7))
    assert first.b != second.b
