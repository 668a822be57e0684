"""Rows the journal's recovery made up give way to the real ones, in either order.

After a crash the journal's recovery (:func:`~trioproxy.ledger.journal.resolve_lines`) makes
up rows for each request a dead process did not finish: every intent without its final record
stands as an ``interrupted`` attempt row, and the request gets an ``interrupted`` request row
carrying their cost and tokens (:func:`~trioproxy.ledger.columns.made_up`). The request's own records may
exist all the same (their journal append failed on a full disk, leaving its intents' lines;
they reached the database or the spool), and both reach the ledger, in either order:

* the made-up rows after the real ones: a made-up request row is left out when its request
  has a request row stored (both backends), an intent's attempt row has its final row's key
  and start time, so it is a conflict and is ignored;
* the made-up rows first (the real ones were spooled and replayed later, from a spool file
  read after the recovery's): the batch that brings a real row deletes the provisional rows
  it replaces (:func:`replaced`: its request's made-up request row; the intent row of its
  attempt) and subtracts them from every roll-up (:func:`undo`: ``ledger_daily``,
  ``ledger_hourly``, ``ledger_days``, the minute tables), in the transaction that inserts
  it; a roll-up row left counting nothing is deleted. A batch holding both keeps the real
  ones (:func:`in_batch`).

A batch finds the provisional rows its real rows replace cheaply, as rows with outcome
``interrupted`` are rare (crashes and drains): SQLite through the partial index :data:`INDEX`
(one probe of a small index per request), PostgreSQL in its list of them,
``ledger_provisional`` (:data:`REGISTRY_DDL`, kept :data:`KEEP_DAYS`), looked up by the
batch's request ids (:data:`REGISTRY_LOOKUP`); there a batch
holding provisional rows takes an advisory lock alone, the others take it shared, so that of
a real row and its made-up one written at the same time by two processes, the later sees the
earlier (a batch that replaces made-up rows takes it alone too: taking them off the roll-ups
beside other batches deadlocked). The ledger then holds one request row per request, and its
roll-ups and a budget rebuild (:mod:`~trioproxy.ledger.spend`) count the real one alone. A
provisional row dropped by retention (or its entry, after :data:`KEEP_DAYS`) before its real
one arrives cannot be found: the real one is then counted beside it in the roll-ups (as any
record replayed after its day's raw rows were dropped). A PostgreSQL ledger made before the
list has the made-up rows of its last :data:`KEEP_DAYS` days listed after its first open, one
day partition per retention round (:func:`~trioproxy.ledger.postgres_schema.backfill_step`;
the writer's first comes at start): a real row stored before its day is listed does not find
its made-up row (both are counted, as before the upgrade).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from trioproxy.ledger import days, hourly, minutes
from trioproxy.ledger.backend import DAILY_KEY, aggregate
from trioproxy.ledger.columns import COLUMNS, METRICS, made_up
from trioproxy.ledger.record import UsageRecord

INDEX = (
    "CREATE INDEX IF NOT EXISTS ledger_raw_interrupted ON ledger_raw (request_id) "
    "WHERE outcome = 'interrupted'"
)
"""SQLite's: the rows a real one may replace are among these (a query names
``outcome = 'interrupted'`` as written here, for the planner to use it)."""

Key = tuple[str, str, int, str]


def provisional(r: UsageRecord) -> bool:
    """A row recovery made up: a :func:`~trioproxy.ledger.columns.made_up` request row, or an
    attempt row an intent left (outcome ``interrupted``: a final attempt record never has it,
    :func:`~trioproxy.pipeline.accounting.usage_records`)."""
    return r.outcome == "interrupted" and (r.kind == "attempt" or made_up(r))


def slot(request_id: str, kind: str, attempt: int, target: str) -> Key:
    """What a real row takes the place of (``target`` as stored: ``''`` for none): its
    request's request row (whatever its target), or the same attempt's row."""
    return (request_id, "request", 0, "") if kind == "request" else (request_id, kind, attempt,
                                                                      target)  # fmt: skip


def _slot(r: UsageRecord) -> Key:
    return slot(r.request_id, r.kind, r.attempt, r.target or "")


def in_batch(records: Sequence[UsageRecord]) -> Sequence[UsageRecord]:
    """``records`` without the provisional ones whose real row is in the batch too."""
    if not any(provisional(r) for r in records):
        return records
    real = real_slots(records)
    return [r for r in records if not (provisional(r) and _slot(r) in real)]


def real_ids(records: Iterable[UsageRecord]) -> list[str]:
    """The requests whose stored provisional rows ``records`` may replace."""
    return list({r.request_id for r in records if not provisional(r)})


def real_slots(records: Iterable[UsageRecord]) -> set[Key]:
    """The :func:`slot` of each real row of ``records``."""
    return {_slot(r) for r in records if not provisional(r)}


def lookup_sql(where_ids: str, extra: str = "") -> str:
    """Stored rows of outcome ``interrupted`` of some requests (``where_ids``: the condition on
    ``request_id``), in :data:`~trioproxy.ledger.columns.COLUMNS` order, then ``extra``
    columns (SQLite: how to find the row again); by :data:`INDEX`."""
    return (
        f"SELECT {', '.join(COLUMNS)}{extra} FROM ledger_raw "
        f"WHERE outcome = 'interrupted' AND request_id {where_ids}"
    )


def replaced(stored: Iterable[UsageRecord], records: Sequence[UsageRecord]) -> list[UsageRecord]:
    """The stored rows (:func:`lookup_sql`'s) that a real row of ``records`` replaces."""
    real = real_slots(records)
    return [s for s in stored if provisional(s) and _slot(s) in real]


def where_sql(table: str = "") -> str:
    """:func:`provisional` of a raw row (of ``table``, an alias), in SQL."""
    t = f"{table}." if table else ""
    made_up = f"{t}status = 0 AND {t}target = ''"
    return f"{t}outcome = 'interrupted' AND ({t}kind = 'attempt' OR ({made_up}))"


REGISTRY_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_provisional (request_id text NOT NULL, "
    "kind text NOT NULL, attempt integer NOT NULL, target text NOT NULL, "
    "ts timestamptz NOT NULL, PRIMARY KEY (request_id, kind, attempt, target, ts))"
)
"""PostgreSQL's list of the provisional rows stored (their raw key; entries older than
:data:`KEEP_DAYS`, or than the partitions retention drops, are trimmed). Not :data:`INDEX`:
an index of the partitioned raw table is one per day partition, and the look-up of a batch's
requests planned and probed each of them (measured: 14.6 ms a batch of 500 with 40 days kept, on a busy 2-core box, where
the batch's whole write took ~25 ms; this table's look-up by its primary key: ~0.1 ms)."""
REGISTRY_KEY = "request_id, kind, attempt, target, ts"
REGISTRY_LOOKUP = f"SELECT {REGISTRY_KEY} FROM ledger_provisional WHERE request_id = ANY(%s)"
"""The entries of some requests (a batch's :func:`real_ids`), by the primary key's index
(``request_id`` first): its cost does not grow with the list (a join of the list with the
staged batch hash-joined the whole list: 35 ms a batch of 500 at 100,000 entries, 200 ms at
1,000,000). Which of them a batch's real rows replace: :func:`registered`."""
KEEP_DAYS = 7
"""Days an entry of ``ledger_provisional`` is kept (by its row's time) even without
retention: the spool has no bound of its own (it keeps what the database did not take for
as long as the database is down), so this is the longest outage after which a real row
replayed from a spool still replaces its made-up row (after it, both are counted, as a record
replayed after retention dropped its day). Without it the list grew forever (every crash's
and drain's rows), and with it every batch's look-up."""


def registered(
    entries: Iterable[tuple[object, ...]], records: Sequence[UsageRecord]
) -> list[tuple[object, ...]]:
    """The entries (:data:`REGISTRY_LOOKUP`'s rows) that a real row of ``records`` replaces."""
    real = real_slots(records)
    return [e for e in entries if slot(*e[:4]) in real]  # type: ignore[arg-type]


Statement = tuple[str, list[tuple[object, ...]]]


def _order(key: Sequence[object]) -> tuple[tuple[bool, str], ...]:
    """A sort key of a roll-up key, whatever its values' types (any one order will do)."""
    return tuple((v is None, str(v)) for v in key)


def _subtract(table: str, keys: str, sums: Sequence[str], count: str, p: str,
              rows: Sequence[Sequence[object]]) -> list[Statement]:  # fmt: skip
    """Take ``rows`` (key values, then ``sums``, as the roll-up's upsert takes them) off
    ``table``, then delete its rows left counting nothing. An ``UPDATE``, not a negative
    upsert: a roll-up row that is not there (trimmed minutes) stays absent."""
    names = [k.strip() for k in keys.split(",")]
    where = " AND ".join(f"{k} = {p}" for k in names)
    sets = ", ".join(f"{m} = {m} - {p}" for m in sums)
    n = len(names)
    rows = sorted(rows, key=lambda r: _order(r[:n]))  # one order for every writer
    return [
        (f"UPDATE {table} SET {sets} WHERE {where}", [(*r[n:], *r[:n]) for r in rows]),
        (f"DELETE FROM {table} WHERE {where} AND {count} = 0", [tuple(r[:n]) for r in rows]),
    ]


def undo(
    removed: Sequence[UsageRecord], *, zone: str, placeholder: str,
    day: Callable[[str], object] = str,
) -> list[Statement]:  # fmt: skip
    """The statements (each with its parameter rows, for ``executemany``) that take the
    ``removed`` raw rows off every roll-up, as the write that stored them added them:
    ``zone`` the day roll-up's, ``day`` how ``ledger_daily``'s day is passed (an ISO date)."""
    p = placeholder
    daily = [(day(k[0]), *k[1:], *v) for k, v in aggregate(removed).items()]
    hours = hourly.aggregate(removed)
    out = [
        *_subtract("ledger_daily", DAILY_KEY, METRICS, "requests", p, daily),
        *_subtract("ledger_hourly", hourly.KEY_COLUMNS, METRICS, "requests", p, hours),
        *_subtract("ledger_days", days.KEY_COLUMNS, METRICS, "requests", p,
                   days.from_hour_aggregate(hours, zone)),
        *_subtract(minutes.TABLES[0], minutes.KEY_COLUMNS, minutes.COUNTS, "attempts", p,
                   minutes.aggregate(removed)),
        *_subtract(minutes.TABLES[1], minutes.TEAM_KEY_COLUMNS, minutes.COUNTS, "attempts", p,
                   minutes.aggregate(removed, per_team=True)),
    ]  # fmt: skip
    return [(sql, params) for sql, params in out if params]


__all__ = [
    "INDEX",
    "KEEP_DAYS",
    "REGISTRY_DDL",
    "REGISTRY_KEY",
    "REGISTRY_LOOKUP",
    "in_batch",
    "lookup_sql",
    "provisional",
    "real_ids",
    "real_slots",
    "registered",
    "replaced",
    "slot",
    "undo",
    "where_sql",
]
