"""Cost of the ledger journal on the request path, measured (a few seconds).

    .venv/bin/python loadtest/journal_bench.py [--records 20000]

Prints the wall and CPU time of one ``Journal.append`` (serialise one record, then one
``write`` to the page cache, done synchronously in ``submit`` and before every upstream
call: about three per request), split into its two parts, and what batching the writes
would save: the same lines written three to a ``write`` (one write per request). Last, one
fsync of what was appended (done by the writer every ``ledger_fsync_interval_s``, in a
thread). CPU is process time: robust to other load on the box.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_ledger_helpers import make_records
from trioproxy.ledger.journal import Journal, _line

PER_REQUEST = 3
"""Journal lines per single-attempt request: the intent, the attempt and request records."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=20_000)
    args = p.parse_args()
    records = make_records(args.records, seed=1)
    n = len(records)
    with tempfile.TemporaryDirectory() as d:
        journal = Journal(d)
        wall, cpu = time.perf_counter(), time.process_time()
        for r in records:
            journal.append(r)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = journal.statistics().bytes
        sync = time.perf_counter()
        journal.sync()
        sync = time.perf_counter() - sync
        journal.close()

        t = time.process_time()
        lines = [_line(r, intent=False) for r in records]
        serialise = time.process_time() - t
        fd = os.open(Path(d) / "split", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            t = time.process_time()
            for line in lines:
                os.write(fd, line)
            one_each = time.process_time() - t
            t = time.process_time()
            for i in range(0, n, PER_REQUEST):
                os.write(fd, b"".join(lines[i : i + PER_REQUEST]))
            batched = time.process_time() - t
        finally:
            os.close(fd)
    us = 1e6 / n
    print(f"append: {wall * us:.1f} us wall, {cpu * us:.1f} us CPU per record "
          f"({n} records, {size / n:.0f} B each)")  # fmt: skip
    print(f"  of which serialise {serialise * us:.1f} us CPU, write {one_each * us:.1f} us CPU")
    print(
        f"one write per request ({PER_REQUEST} lines): {batched * us:.1f} us CPU per record; "
        f"saves {(one_each - batched) * us * PER_REQUEST:.1f} us CPU per request"
    )
    print(f"fsync of {size / 1e6:.1f} MB: {sync * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
