"""Refusals about the relay, the sender or the message never fail or suppress readers."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer import bounces, pipeline
from mailer import status as standing
from mailer.cli import app
from mailer.errors import DeliveryError
from mailer.ledger import State, ledger_path, read_records
from mailer.replies import Cause, Returned, Verdict, read_reply

from .conftest import SAMPLE, SAMPLE_RECIPIENTS
from .helpers import FAST, cli_env, send_cli, settings_for, write_list
from .smtp_server import Behaviour, Server


@pytest.mark.parametrize(
    ("code", "text", "stage", "verdict", "gone", "cause"),
    [
        (250, "2.0.0 Queued", "data", Verdict.SENT, False, None),
        (451, "4.3.0 Try again later", "rcpt", Verdict.TRANSIENT, False, None),
        (None, "timed out", "data", Verdict.TRANSIENT, False, None),
        (550, "5.1.1 No such user", "rcpt", Verdict.FAILED, True, None),
        (550, "5.1.2 Bad destination system", "rcpt", Verdict.FAILED, True, None),
        (553, "5.1.3 Bad recipient address syntax", "rcpt", Verdict.FAILED, True, None),
        (550, "5.1.6 Mailbox has moved", "rcpt", Verdict.FAILED, True, None),
        (550, "5.1.10 Recipient address has null MX", "rcpt", Verdict.FAILED, True, None),
        # Exchange Online's front door refuses a recipient that does not exist with 5.4.1.
        (
            550,
            "5.4.1 Recipient address rejected: Access denied",
            "rcpt",
            Verdict.FAILED,
            True,
            None,
        ),
        (550, "No such user here", "rcpt", Verdict.FAILED, False, None),  # bare: never suppresses
        # One reader's mailbox: deferred and retried, never the relay's quota.
        (552, "5.2.2 Mailbox full", "rcpt", Verdict.TRANSIENT, False, None),
        (552, "5.2.2 Mailbox quota exceeded", "data", Verdict.TRANSIENT, False, None),
        (550, "5.2.1 Mailbox disabled", "rcpt", Verdict.TRANSIENT, False, None),
        (554, "5.4.4 Unable to route", "rcpt", Verdict.TRANSIENT, False, None),
        (552, "5.2.3 Message too large for this mailbox", "data", Verdict.FAILED, False, None),
        # Exchange's own submission store at DATA: our sending mailbox is full.
        (
            554,
            "5.2.2 STOREDRV.Submission.Exception:QuotaExceededException",
            "data",
            Verdict.RELAY,
            False,
            Cause.OWN_MAILBOX,
        ),
        (550, "relay not permitted", "rcpt", Verdict.RELAY, False, Cause.RELAY),
        (550, "5.1.7 Invalid sender", "rcpt", Verdict.RELAY, False, Cause.SENDER),
        (
            550,
            "5.1.8 Access denied, bad outbound sender",
            "rcpt",
            Verdict.RELAY,
            False,
            Cause.SENDER,
        ),
        (550, "5.1.90 You've reached your daily limit", "rcpt", Verdict.RELAY, False, Cause.QUOTA),
        (
            554,
            "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceeded",
            "data",
            Verdict.RELAY,
            False,
            Cause.QUOTA,
        ),
        (552, "5.3.4 Message too big for system", "data", Verdict.RELAY, False, Cause.SIZE),
        (550, "5.7.1 Message rejected as spam", "data", Verdict.RELAY, False, Cause.POLICY),
        (535, "5.7.30 Basic authentication is not supported", "auth", Verdict.RELAY, False, None),
    ],
)
def test_each_reply_is_classed_as_a_mail_engineer_would(
    code: int | None,
    text: str,
    stage: str,
    verdict: Verdict,
    gone: bool,
    cause: Cause | None,
) -> None:
    reading = read_reply(code, text, stage)
    assert (reading.verdict, reading.mailbox_gone) == (verdict, gone)
    if cause is not None:
        assert reading.cause is cause


@pytest.mark.parametrize(
    "reply",
    [
        "550 relay not permitted",
        "550 Rejected",  # bare and unexplained: the same for many in a row is the relay
        "550 5.7.1 Client does not have permissions to send as this sender",
        "550 5.1.8 Access denied, bad outbound sender",
    ],
)
def test_a_relay_refusing_everyone_stops_and_nobody_is_failed_or_suppressed(
    tmp_path: Path, reply: str
) -> None:
    recipients = write_list(tmp_path / "recipients", 30)
    with Server(Behaviour(reject_every_rcpt=reply)) as relay:
        settings = settings_for(relay.port, tmp_path, recipients_dir=recipients)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with (
            pytest.raises(DeliveryError) as raised,
            pipeline.open_ledger(job, settings) as ledger,
        ):
            pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    assert "To fix:" in str(raised.value) and "stay pending" in str(raised.value)
    assert raised.value.exit_code == 2  # nothing was sent
    assert not (recipients / "suppressions.csv").exists()
    state = State.load(ledger_path(settings.ledger_dir, "2017-03"))
    assert not any(state.is_done(f"reader{i}@example.org") for i in range(30))
    # Once the relay is fixed, the same command mails everyone.
    with Server() as fixed:
        settings = settings_for(fixed.port, tmp_path, recipients_dir=recipients)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    assert report.total.sent == 30 and len(fixed.received) == 30
    result = CliRunner().invoke(
        app,
        ["status", str(SAMPLE), "--recipients", str(recipients), "--json"],
        env={"MAILER_LEDGER_DIR": str(settings.ledger_dir)},
    )
    assert '"failed": 0' in result.output and '"sent": 30' in result.output


def test_one_bare_550_fails_that_reader_but_never_suppresses(tmp_path: Path) -> None:
    behaviour = Behaviour(reject_rcpt={"reader4@example.org": "550 Rejected"})
    recipients = write_list(tmp_path / "recipients", 12)
    with Server(behaviour) as server:
        settings = settings_for(server.port, tmp_path, recipients_dir=recipients)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    assert (report.total.sent, report.total.failed) == (11, 1)
    assert report.suppressed == [] and not (recipients / "suppressions.csv").exists()


def test_more_dead_mailboxes_than_the_cap_are_held_until_allowed(tmp_path: Path) -> None:
    dead = {f"reader{i}@example.org": "550 5.1.1 User unknown" for i in range(25)}
    recipients = write_list(tmp_path / "recipients", 60)
    with Server(Behaviour(reject_rcpt=dead)) as server:
        env = cli_env(server.port, tmp_path / "ledger")
        first = send_cli(recipients, env)
        assert first.exit_code == 1, first.output
        assert "25 addresses were refused as dead mailboxes" in first.output
        assert not (recipients / "suppressions.csv").exists()
        allowed = send_cli(recipients, env, "--allow-mass-suppression")
    assert "Nothing to send." in allowed.output
    rows = (recipients / "suppressions.csv").read_text().splitlines()
    assert len(rows) == 26 and all("no such mailbox" in row for row in rows[1:])


def test_a_message_larger_than_the_relays_size_stays_pending(tmp_path: Path) -> None:
    with Server(data_size_limit=4000) as relay:  # advertises SIZE 4000
        settings = settings_for(relay.port, tmp_path)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with (
            pytest.raises(DeliveryError) as raised,
            pipeline.open_ledger(job, settings) as ledger,
        ):
            pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
        assert relay.received == []
    assert "at most 4,000 (SIZE)" in str(raised.value)
    assert "images smaller" in str(raised.value)
    state = State.load(ledger_path(settings.ledger_dir, "2017-03"))
    assert all(outcome == "held" for outcome, _ in state.last.values())


def test_a_relays_reply_is_printed_as_it_is_even_with_markup_characters(
    tmp_path: Path,
) -> None:
    reply = "550 5.1.1 [/] no [bold]such[/bold] user"
    recipients = write_list(tmp_path / "recipients", 6)
    with Server(Behaviour(reject_rcpt={"reader2@example.org": reply})) as server:
        env = cli_env(server.port, tmp_path / "ledger")
        sent = send_cli(recipients, env)
    assert sent.exit_code == 1, sent.output
    status = CliRunner().invoke(
        app, ["status", str(SAMPLE), "--recipients", str(recipients)], env=env
    )
    assert "5.1.1 [/] no [bold]such[/bold] user" in status.output


def test_check_reports_each_variants_whole_message_size(tmp_path: Path) -> None:
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    image = bulletin / "images" / "7msp-banner.png"
    image.write_bytes(image.read_bytes()[:64] + os.urandom(11_000_000))  # a camera's photo
    result = CliRunner().invoke(
        app, ["check", str(bulletin), "--recipients", str(SAMPLE_RECIPIENTS)]
    )
    assert result.exit_code == 0, result.output
    assert "whole message" in result.output
    assert re.search(r"the message is 15\.\d MB", result.output)  # 11 MB in base64
    assert "many relays refuse more than 10 MB" in result.output


def test_a_relay_stop_after_some_messages_went_out_exits_1_not_2(tmp_path: Path) -> None:
    recipients = write_list(tmp_path / "recipients", 12)
    policy = {"reader9@example.org": "554 5.7.1 Message refused by policy"}
    with Server(Behaviour(reject_rcpt=policy)) as server:
        env = cli_env(server.port, tmp_path / "ledger")
        result = send_cli(recipients, env)
    assert 0 < len(server.received) < 12
    assert result.exit_code == 1, result.output  # 2 promises that nothing was sent
    assert "To fix:" in result.output


@pytest.mark.parametrize(
    "reply",
    [
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        "550 5.1.90 Your message can't be sent because you've reached your daily limit",
    ],
)
def test_the_relays_own_quota_pauses_the_send_with_everyone_pending(
    tmp_path: Path, reply: str
) -> None:
    recipients = write_list(tmp_path / "recipients", 20)
    with Server(Behaviour(reject_every_rcpt=reply)) as relay:
        settings = settings_for(relay.port, tmp_path, recipients_dir=recipients)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    assert report.paused_until is not None and report.total.failed == 0
    assert standing.exit_code(job, settings, report) == standing.PAUSED_AT_QUOTA
    assert report.stopped is not None and "quota is used up" in report.stopped
    assert not (recipients / "suppressions.csv").exists()
    state = State.load(ledger_path(settings.ledger_dir, "2017-03"))
    assert not any(state.is_done(f"reader{i}@example.org") for i in range(20))


def test_one_full_mailbox_defers_that_reader_and_counts_once_as_a_soft_bounce(
    tmp_path: Path,
) -> None:
    """552 5.2.2 at RCPT is one reader's mailbox, not the relay's quota."""
    full = {"reader4@example.org": "552 5.2.2 Mailbox full"}
    recipients = write_list(tmp_path / "recipients", 12)
    with Server(Behaviour(reject_rcpt=full)) as server:
        env = cli_env(server.port, tmp_path / "ledger")
        result = send_cli(recipients, env)
    assert result.exit_code == 1, result.output  # a deferral: the issue is not complete
    assert "quota" not in result.output and "To fix:" not in result.output
    assert len(server.received) == 11
    ledger = tmp_path / "ledger"
    state = State.load(ledger_path(ledger, "2017-03"))
    assert state.outcome("reader4@example.org") == "deferred"
    started = datetime.fromisoformat(next(read_records(ledger / "2017-03.jsonl")).time)
    window = timedelta(hours=72)

    def close(hours: float) -> bounces.BounceReport:
        return bounces.process_messages(
            [],
            ledger,
            recipients,
            bounce_address=None,
            soft_limit=3,
            window=window,
            now=started + timedelta(hours=hours),
        )

    assert close(71).bounces == []  # still retried by later runs within the window
    ended = close(73)
    assert [(b.recipient, b.verdict) for b in ended.bounces] == [
        ("reader4@example.org", Returned.SOFT)
    ]
    assert close(100).bounces == []  # counted once
    assert bounces.soft_failures(ledger, {"reader4@example.org"}, 1) == ["reader4@example.org"]
    assert not (recipients / "suppressions.csv").exists()  # one soft bounce of three


def test_the_sending_mailbox_full_at_exchange_stops_with_that_advice(tmp_path: Path) -> None:
    recipients = write_list(tmp_path / "recipients", 6)
    reply = "554 5.2.2 STOREDRV.Submission.Exception:QuotaExceededException; mailbox full"
    with Server(Behaviour(reject_every_rcpt=reply)) as server:
        result = send_cli(recipients, cli_env(server.port, tmp_path / "ledger"))
    assert result.exit_code == 2, result.output
    assert "empty the sending mailbox" in " ".join(result.output.split())
    assert not (recipients / "suppressions.csv").exists()


def test_a_zero_send_budget_sends_nothing_and_pauses(tmp_path: Path) -> None:
    """MAILER_SEND_BUDGET=0s meant no budget at all: the run could overrun the job."""
    with Server() as relay:
        settings = settings_for(relay.port, tmp_path, send_budget="0s")
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
        assert relay.received == []
    assert report.paused_until is not None and report.total.sent == 0
    assert standing.exit_code(job, settings, report) == standing.PAUSED_AT_QUOTA
