"""Request ids: the millisecond they were made in, then random bits; distinct, in time order,
and a forked child never repeats its parent's random bytes."""

from __future__ import annotations

import os
import re
import time

from trioproxy.core.ids import BLOCK, ID_BYTES, TIME_DIGITS, make_id, request_id

RANDOM_AT = 4 + TIME_DIGITS
"""Where an id's random part starts (after ``req_`` and the millisecond)."""


def test_ids_are_32_hex_digits_and_distinct_across_blocks() -> None:
    ids = [request_id() for _ in range(3 * BLOCK // ID_BYTES + 7)]  # several refills
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)
    assert len({i[RANDOM_AT:] for i in ids}) == len(ids)  # the random parts alone differ


def test_an_id_starts_with_the_millisecond_it_was_made_in() -> None:
    before = time.time_ns() // 1_000_000
    rid = request_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(rid[4:RANDOM_AT], 16) <= after


def test_text_order_is_time_order() -> None:
    """Fixed width: a later millisecond sorts after, whatever the random part, across a
    change in the number of significant digits."""
    low, high = b"\xff" * ID_BYTES, b"\x00" * ID_BYTES
    pairs = [(1, 2), (0xFFFFFFFFFFF, 0x100000000000), (1_765_000_000_000, 1_765_000_000_001)]
    for earlier, later in pairs:
        assert make_id(earlier, low) < make_id(later, high)
    assert make_id(1, b"\x00" * ID_BYTES) == "req_000000000001" + "00" * ID_BYTES


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
    parent_next = {request_id()[RANDOM_AT:] for _ in range(BLOCK // ID_BYTES)}
    assert child[RANDOM_AT:] not in parent_next  # the random part: the time part differs anyway
