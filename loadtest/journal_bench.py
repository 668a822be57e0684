"""Cost of the ledger journal on the request path, measured (a few seconds).

    .venv/bin/python loadtest/journal_bench.py [--records 20000]

Prints the wall and CPU time of one ``Journal.append`` (a ``write`` to the page cache, done
synchronously in ``submit`` and before every upstream call: about three per request) and of
one fsync of what was appended (done by the writer every ``ledger_fsync_interval_s``, in a
thread).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_ledger_helpers import make_records
from trioproxy.ledger.journal import Journal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=20_000)
    args = p.parse_args()
    records = make_records(args.records, seed=1)
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
    n = len(records)
    print(f"append: {wall / n * 1e6:.1f} us wall, {cpu / n * 1e6:.1f} us CPU per record "
          f"({n} records, {size / n:.0f} B each)")  # fmt: skip
    print(f"fsync of {size / 1e6:.1f} MB: {sync * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
