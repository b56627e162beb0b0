"""The relay's quotas (MAILER_RATE_LIMITS): held exactly, across runs, with a movable clock."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer import pipeline
from mailer import status as standing
from mailer.cli import app
from mailer.ledger import read_records
from mailer.quota import Limit, Quota, QuotaReached, parse_limits

from .conftest import SAMPLE, SAMPLE_RECIPIENTS
from .helpers import FAST, cli_env, send_cli, settings_for
from .smtp_server import Server

DAY = 86400


def test_limits_are_read_as_staff_write_them() -> None:
    assert parse_limits("30/minute, 10000/day") == (Limit(30, 60), Limit(10000, DAY))
    assert parse_limits(" 14/second ,2/hours") == (Limit(14, 1), Limit(2, 3600))
    with pytest.raises(ValueError, match="'30 per minute' is not a limit"):
        parse_limits("30 per minute")


def test_a_full_window_gives_the_moment_its_oldest_start_leaves_it() -> None:
    quota = Quota([Limit(2, 60), Limit(3, DAY)], history=[0.0, 30.0], clock=lambda: 40.0)
    assert quota.earliest(40.0) == (60.0, Limit(2, 60))
    quota.starts.append(61.0)
    assert quota.earliest(62.0) == (DAY + 0.0, Limit(3, DAY))
    with pytest.raises(QuotaReached) as raised:
        asyncio.run(quota.take())
    assert raised.value.resume_at == DAY


def test_a_daily_quota_spreads_a_send_over_days_without_failing_anyone(
    server: Server, tmp_path: Path
) -> None:
    now = [datetime(2026, 12, 1, 9, 0).timestamp()]
    settings = settings_for(server.port, tmp_path, rate_limits="6/day")

    def run() -> int:
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(
                job, settings, ledger, ledger.state(), policy=FAST, clock=lambda: now[0]
            )
        assert report.total.failed == 0
        return standing.exit_code(job, settings, report)

    assert run() == standing.PAUSED_AT_QUOTA and len(server.received) == 6
    now[0] += 3600  # the same day: nothing more
    assert run() == standing.PAUSED_AT_QUOTA and len(server.received) == 6
    now[0] += DAY
    assert run() == standing.PAUSED_AT_QUOTA and len(server.received) == 12
    now[0] += DAY
    assert run() == 0 and len(server.received) == 13
    assert sorted(r.rcpt.lower() for r in server.received) == sorted(set(server.by_rcpt()))
    sent = sorted(
        datetime.fromisoformat(r.time).timestamp()
        for r in read_records(settings.ledger_dir / "2017-03.jsonl")
        if r.outcome == "sent"
    )
    for moment in sent:  # no day-long window ever holds more than 6
        assert sum(moment - DAY < other <= moment for other in sent) <= 6


def test_a_stop_at_the_quota_exits_75_and_says_when_to_resume(
    server: Server, tmp_path: Path
) -> None:
    env = {**cli_env(server.port, tmp_path / "ledger"), "MAILER_RATE_LIMITS": "4/day"}
    recipients = settings_for(server.port, tmp_path).recipients_dir  # a private copy
    result = send_cli(recipients, env)
    assert result.exit_code == standing.PAUSED_AT_QUOTA, result.output
    assert "quota of 4/day is used up" in result.output and "resume after" in result.output
    assert len(server.received) == 4
    ledger = (tmp_path / "ledger" / "2017-03.jsonl").read_text()
    assert '"outcome": "paused"' in ledger and '"outcome": "failed"' not in ledger


def test_the_microsoft365_preset_fills_in_and_explicit_settings_win() -> None:
    from .conftest import make_settings

    preset = make_settings(provider="microsoft365")
    assert (preset.smtp_host, preset.smtp_port, preset.smtp_security) == (
        "smtp.office365.com",
        587,
        "starttls",
    )
    assert preset.sign_in == "xoauth2" and preset.max_connections == 3
    assert preset.limits == (Limit(30, 60), Limit(9000, DAY))
    assert preset.oauth_scope == "https://outlook.office365.com/.default"
    mine = make_settings(provider="microsoft365", max_connections=1, rate_limits="20/minute")
    assert mine.max_connections == 1 and mine.limits == (Limit(20, 60),)


def test_check_shows_the_relay_secrets_masked_and_how_long_a_send_takes() -> None:
    env = {
        "MAILER_PROVIDER": "microsoft365",
        "MAILER_SMTP_USERNAME": "newsletter@isu.example.org",
        "MAILER_OAUTH_CLIENT_SECRET": "very-secret-value",
        "MAILER_RATE_LIMITS": "6/day",
        "MAILER_BOUNCE_ADDRESS": "bounces@isu.example.org",
    }
    result = CliRunner().invoke(
        app, ["check", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "relay: smtp.office365.com:587 (starttls), sign-in xoauth2" in result.output
    assert "limits: 6/day" in result.output and "preset microsoft365" in result.output
    assert "MAILER_OAUTH_CLIENT_SECRET" in result.output
    assert "very-secret-value" not in result.output
    assert "13 messages take at least 2 d over several runs" in result.output
    assert "envelope sender to be the sending mailbox" in result.output


def test_a_wait_for_a_window_ends_at_once_when_the_run_stops() -> None:
    quota = Quota([Limit(1, 60)], history=[100.0], clock=lambda: 101.0)  # free at 160

    async def stopped_meanwhile() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await asyncio.wait_for(quota.take(stop), timeout=5)

    assert asyncio.run(stopped_meanwhile()) is False
    assert quota.starts == [100.0]  # no place taken
