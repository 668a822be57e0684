"""Request ids: random, distinct, and a forked child never repeats its parent's."""

from __future__ import annotations

import os
import re

from trioproxy.core.ids import BLOCK, ID_BYTES, request_id


def test_ids_are_24_hex_digits_and_distinct_across_blocks() -> None:
    ids = [request_id() for _ in range(3 * BLOCK // ID_BYTES + 7)]  # several refills
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_parents_block() -> None:
    request_id()  # the parent holds a partly used block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    parent_next = [request_id() for _ in range(BLOCK // ID_BYTES)]
    assert child not in parent_next
