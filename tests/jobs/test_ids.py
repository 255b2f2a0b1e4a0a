"""Job ids (``wireframe.jobs.ids``): random, unique, never shared with a forked child."""

from __future__ import annotations

import os
import re

from wireframe.jobs.ids import new_job_id


def test_ids_are_128_random_bits_in_hex_and_unique() -> None:
    ids = [new_job_id() for _ in range(2000)]  # several blocks of the pool
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    new_job_id()  # the parent holds a block with unread ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_job_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != new_job_id(), "the child drew fresh bytes, not the parent's next id"
