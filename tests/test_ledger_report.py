"""``trioproxy report``: duration parsing, table layout, and the CLI end to end on SQLite."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import trio

from tests.test_ledger_helpers import make_records, totals_of
from trioproxy.ledger.backend import ReportRow
from trioproxy.ledger.factory import SQLITE_NAME
from trioproxy.ledger.report import format_report, parse_since, report_main
from trioproxy.ledger.sqlite import SqliteLedger

NOW = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - dt.timedelta(days=7)),
        ("24h", NOW - dt.timedelta(hours=24)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("2025-03-01", dt.datetime(2025, 3, 1, tzinfo=dt.UTC)),
    ],
)
def test_parse_since(text: str, expected: dt.datetime) -> None:
    assert parse_since(text, now=NOW) == expected


def test_parse_since_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since("7 days", now=NOW)


def test_format_report_aligns_and_totals() -> None:
    rows = [  # requests, input, read, write 5m, write 1h, output, reasoning, µUSD x3
        ReportRow(("blue", "chat"), 3, 1200, 9000, 100, 50, 300, 20, 500_000, 0, 2_000),
        ReportRow(("red", "search"), 10, 5, 0, 0, 0, 7, 0, 12_250_000, 1_500_000, -30),
    ]
    lines = format_report(rows, ["team", "feature"]).splitlines()
    assert lines[0].split() == [
        "team",
        "feature",
        "requests",
        "input",
        "cache_read",
        "cache_write",
        "output",
        "reasoning",
        "cost_usd",
        "saved_usd",
        "prompt_cache_saved_usd",
    ]
    assert lines[2].split() == [
        "blue", "chat", "3", "1,200", "9,000", "150", "300", "20",
        "0.500000", "0.000000", "0.002000",
    ]  # fmt: skip
    assert lines[-1].split() == [
        "TOTAL", "13", "1,205", "9,000", "150", "307", "20", "12.750000", "1.500000", "0.001970",
    ]  # fmt: skip
    assert len({len(line) for line in lines if not line.startswith("-")}) == 1  # aligned


def test_report_cli_on_sqlite_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = make_records(400, seed=31, ts=time.time() - 60)

    async def seed() -> None:
        backend = await SqliteLedger.open(tmp_path / SQLITE_NAME)
        await backend.write_batch(records)
        await backend.aclose()

    trio.run(seed)
    argv = ["--by", "team,model", "--since", "7d", "--state-dir", str(tmp_path)]
    assert report_main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    body = out[2:-2]
    expected_groups = {
        (r.team, r.target or r.provider_model) for r in records if r.kind == "request"
    }
    assert {tuple(line.split()[:2]) for line in body} == expected_groups
    total = out[-1].split()
    want = totals_of(records)
    assert total[0] == "TOTAL"
    assert total[1:3] == [f"{want.count:,}", f"{want.input_tokens:,}"]
    assert total[5] == f"{want.output_tokens:,}"
    assert total[7] == f"{want.cost_micros / 1e6:,.6f}"


def test_report_cli_rejects_unknown_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main(["--by", "team,colour", "--state-dir", "/nonexistent"]) == 2
    assert "colour" in capsys.readouterr().err


def test_report_refuses_to_invent_an_empty_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert report_main([]) == 2
    assert "--state-dir" in capsys.readouterr().err
    assert report_main(["--state-dir", "var"]) == 1
    assert "no ledger at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no ./var, no empty ledger file


def test_report_without_a_ledger_named_reads_the_demos_in_this_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``trioproxy serve`` without --config is the demo, its state in ./var; a bare
    ``trioproxy report`` in the same folder said "no ledger named" (a newcomer's pass)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    records = make_records(50, seed=7, ts=time.time() - 60)

    async def seed() -> None:
        backend = await SqliteLedger.open(tmp_path / "var" / SQLITE_NAME)
        await backend.write_batch(records)
        await backend.aclose()

    trio.run(seed)
    assert report_main([]) == 0
    out = capsys.readouterr()
    assert "the demo's ledger in ./var" in out.err
    assert out.out.splitlines()[-1].split()[1] == f"{totals_of(records).count:,}"


def test_report_config_reads_only_the_storage_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Provider secrets the report does not need may be unset; a broken [storage] is an error."""

    async def seed() -> None:
        backend = await SqliteLedger.open(tmp_path / SQLITE_NAME)
        await backend.write_batch(make_records(20, seed=5, ts=time.time() - 60))
        await backend.aclose()

    trio.run(seed)
    config = tmp_path / "trioproxy.toml"
    config.write_text(
        f'[storage]\nstate_dir = "{tmp_path}"\n\n'
        '[providers.openai]\nkind = "openai"\napi_key_env = "TRIOPROXY_TEST_UNSET_KEY"\n'
    )
    assert report_main(["--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("TOTAL")
    config.write_text("[storage]\nstate_dir = 3\n")
    assert report_main(["--config", str(config)]) == 2
    assert "storage.state_dir" in capsys.readouterr().err
