"""Real sends over SMTP on 127.0.0.1: what the server received, what the ledger says."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
import trustme
from typer.testing import CliRunner

from mailer import pipeline
from mailer import status as standing
from mailer.cli import app
from mailer.delivery import RetryPolicy
from mailer.errors import DeliveryError
from mailer.ledger import Ledger, read_records
from mailer.settings import Settings

from .conftest import SAMPLE, SAMPLE_RECIPIENTS
from .helpers import FAST, cli_env, send, settings_for, write_list
from .smtp_server import (
    Behaviour,
    GreetingRefuser,
    Server,
    accepting_authenticator,
    refusing_authenticator,
)

PASSWORD = "hunter2-very-secret"


def ledger_of(settings: Settings) -> list[dict[str, object]]:
    path = settings.ledger_dir / "2017-03.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def last_outcomes(settings: Settings) -> dict[str, str]:
    return {str(r["recipient"]).lower(): str(r["outcome"]) for r in ledger_of(settings)}


def test_every_recipient_gets_exactly_one_intact_message(server: Server, tmp_path: Path) -> None:
    settings = settings_for(server.port, tmp_path)
    report = send(settings)
    assert report.complete and report.total.sent == 13
    assert set(server.by_rcpt().values()) == {1} and len(server.by_rcpt()) == 13
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=SAMPLE_RECIPIENTS, dry_run=False)
    composed = {m.to.lower(): m.data for m in job.messages()}
    for received in server.received:
        # Byte for byte what was composed, but for the Date of composition.
        expected = composed[received.rcpt.lower()]

        def strip(data: bytes) -> bytes:
            return b"\r\n".join(
                line for line in data.split(b"\r\n") if not line.startswith(b"Date: ")
            )

        assert strip(received.data).rstrip(b"\r\n") == strip(expected).rstrip(b"\r\n")
    outcomes = last_outcomes(settings)
    assert set(outcomes.values()) == {"sent"} and len(outcomes) == 13
    records = ledger_of(settings)
    sent = [r for r in records if r["outcome"] == "sent"]
    assert all(r["code"] == 250 and r["message_id"] and r["time"] for r in sent)


def test_rerun_sends_nothing_more(server: Server, tmp_path: Path) -> None:
    settings = settings_for(server.port, tmp_path)
    send(settings)
    again = send(settings)
    assert again.total.sent == 0 and len(server.received) == 13


def test_550_on_rcpt_fails_that_recipient_only_and_is_not_retried(tmp_path: Path) -> None:
    behaviour = Behaviour(reject_rcpt={"research@example.com": "550 5.1.1 No such user"})
    with Server(behaviour) as server:
        settings = settings_for(server.port, tmp_path)
        report = send(settings)
        assert report.total.failed == 1 and report.total.sent == 12
        failed = [r for r in ledger_of(settings) if r["outcome"] == "failed"]
        assert failed[0]["recipient"] == "research@example.com"
        assert failed[0]["code"] == 550 and "No such user" in str(failed[0]["reply"])
        # "No such user" (5.1.1): the address is suppressed for every later issue.
        suppressions = (settings.recipients_dir / "suppressions.csv").read_text()
        assert "research@example.com,rejected: no such mailbox," in suppressions
        send(settings)  # a rerun does not try a permanent failure again
        assert sum(1 for r in ledger_of(settings) if r["recipient"] == "research@example.com") == 2


def test_451_is_retried_with_backoff_then_sent(tmp_path: Path) -> None:
    with Server(Behaviour(defer_times={"research@example.com": 2})) as server:
        settings = settings_for(server.port, tmp_path)
        report = send(settings)
        assert report.complete and report.total.sent == 13
        trail = [
            (r["outcome"], r["attempt"], r["code"])
            for r in ledger_of(settings)
            if r["recipient"] == "research@example.com"
        ]
        assert trail == [
            ("attempt", 1, None),
            ("deferred", 1, 451),
            ("attempt", 2, None),
            ("deferred", 2, 451),
            ("attempt", 3, None),
            ("sent", 3, 250),
        ]
        assert server.by_rcpt()["research@example.com"] == 1


def test_connection_dropped_mid_data_is_retried_on_a_new_connection(tmp_path: Path) -> None:
    with Server(Behaviour(drop_times={"research@example.com": 1})) as server:
        settings = settings_for(server.port, tmp_path)
        report = send(settings)
        assert report.complete and report.total.sent == 13
        assert server.by_rcpt()["research@example.com"] == 1
        assert server.tracker.total >= 3  # 2 connections, plus one after the drop


def test_server_stalling_past_the_timeout_leaves_recipient_deferred(tmp_path: Path) -> None:
    with Server(Behaviour(stall={"research@example.com": 3.0})) as server:
        settings = settings_for(server.port, tmp_path, smtp_timeout=0.5)
        report = send(settings, policy=RetryPolicy(attempts=2, base=0.05))
        assert report.total.deferred == 1 and report.total.sent == 12
        assert not report.complete
        assert last_outcomes(settings)["research@example.com"] == "deferred"
        status = standing.status(
            pipeline.prepare(SAMPLE, settings, recipients_dir=SAMPLE_RECIPIENTS), settings
        )
        assert status.total == {"sent": 12, "failed": 0, "deferred": 1, "pending": 0}


def test_relay_answering_421_to_every_connection_stops_the_run(tmp_path: Path) -> None:
    with GreetingRefuser() as relay:
        settings = settings_for(relay.port, tmp_path)
        with pytest.raises(DeliveryError) as raised:
            send(settings)
        assert "refused every connection" in str(raised.value) and "421" in str(raised.value)
        assert raised.value.exit_code == 1 and raised.value.code == 421
        assert "sent" not in {r["outcome"] for r in ledger_of(settings)}
        assert relay.connections <= 4


def test_wrong_password_stops_at_once_without_leaking_it(tmp_path: Path) -> None:
    with Server(authenticator=refusing_authenticator, auth_require_tls=False) as server:
        env = cli_env(
            server.port,
            tmp_path / "ledger",
            MAILER_SMTP_USERNAME="isu",
            MAILER_SMTP_PASSWORD=PASSWORD,
        )
        result = CliRunner().invoke(
            app, ["send", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS), "--yes"], env=env
        )
        assert result.exit_code == 2, result.output
        assert "refused the login" in result.output and "535" in result.output
        assert PASSWORD not in result.output
        assert server.received == []
        ledger = (tmp_path / "ledger" / "2017-03.jsonl").read_text()
        assert PASSWORD not in ledger and '"sent"' not in ledger


def test_login_with_the_right_password_sends(tmp_path: Path) -> None:
    with Server(authenticator=accepting_authenticator, auth_require_tls=False) as server:
        settings = settings_for(server.port, tmp_path, smtp_username="isu", smtp_password=PASSWORD)
        assert send(settings).total.sent == 13


@pytest.fixture
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for 127.0.0.1 issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def _trust(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust ``ca`` the way staff trust a private CA: SSL_CERT_FILE."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


def _starttls_server(ca: trustme.CA) -> Server:
    return Server(tls_context=_server_context(ca), require_starttls=True)


def test_starttls_with_a_trusted_certificate_sends(
    certificate_authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust(certificate_authority, tmp_path, monkeypatch)
    with _starttls_server(certificate_authority) as server:
        settings = settings_for(server.port, tmp_path, smtp_security="starttls")
        assert send(settings).total.sent == 13


@pytest.mark.system
def test_implicit_tls_with_a_trusted_certificate_sends(
    certificate_authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust(certificate_authority, tmp_path, monkeypatch)
    with Server(implicit_tls=_server_context(certificate_authority)) as server:
        settings = settings_for(server.port, tmp_path, smtp_security="tls")
        assert send(settings).total.sent == 13
        plain = settings_for(
            server.port, tmp_path, smtp_security="none", smtp_timeout=1, ledger_dir=tmp_path / "l2"
        )
        with pytest.raises(DeliveryError):  # a TLS port spoken to in clear never works
            send(plain)


def test_starttls_refuses_an_untrusted_certificate(
    certificate_authority: trustme.CA, tmp_path: Path
) -> None:
    with _starttls_server(certificate_authority) as server:
        settings = settings_for(server.port, tmp_path, smtp_security="starttls")
        with pytest.raises(DeliveryError) as raised:
            send(settings)
        assert "TLS" in str(raised.value) and raised.value.exit_code == 2
        assert server.received == []


def test_connection_cap_holds_and_connections_are_reused(tmp_path: Path) -> None:
    with Server(Behaviour(delay=0.01)) as server:
        recipients = write_list(tmp_path / "list", 60)
        settings = settings_for(server.port, tmp_path, max_connections=3)
        report = send(settings, recipients)
        assert report.total.sent == 60
        assert server.tracker.peak == 3
        assert server.tracker.total == 3  # persistent: many messages a connection


@pytest.mark.system
def test_rate_limit_holds_in_every_one_second_window(tmp_path: Path) -> None:
    with Server() as server:
        recipients = write_list(tmp_path / "list", 130)
        settings = settings_for(server.port, tmp_path, max_connections=4, rate_per_second=50)
        assert send(settings, recipients).total.sent == 130
        times = sorted(r.at for r in server.received)
        busiest = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
        assert busiest <= 50
        assert times[-1] - times[0] >= 2.0  # 130 messages cannot go faster than ~2.6 s


def test_second_run_on_the_same_issue_refuses(server: Server, tmp_path: Path) -> None:
    settings = settings_for(server.port, tmp_path)
    env = cli_env(server.port, settings.ledger_dir)
    with Ledger(settings.ledger_dir, "2017-03"):
        result = CliRunner().invoke(
            app, ["send", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS), "--yes"], env=env
        )
    assert result.exit_code == 2
    assert "another run is already sending this issue" in result.output
    assert server.received == []


def test_test_to_sends_one_message_per_variant_and_records_nothing(
    server: Server, tmp_path: Path
) -> None:
    settings = settings_for(server.port, tmp_path)
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=SAMPLE_RECIPIENTS, dry_run=False)
    report = pipeline.send_test_messages(job, settings, "editor@example.org")
    assert report.total.sent == 9
    assert server.by_rcpt() == {"editor@example.org": 9}
    subjects = {str(r.message()["Subject"]) for r in server.received}
    assert all(s.startswith("[TEST] ") for s in subjects) and len(subjects) == 3
    assert all(
        r.message()["To"].addresses[0].addr_spec == "editor@example.org" for r in server.received
    )
    assert not (settings.ledger_dir / "2017-03.jsonl").exists()


def test_status_json_counts_each_segment_and_each_address_once(
    server: Server, tmp_path: Path
) -> None:
    settings = settings_for(server.port, tmp_path)
    job = pipeline.prepare(
        SAMPLE, settings, recipients_dir=SAMPLE_RECIPIENTS, dry_run=False, limit=5
    )
    with pipeline.open_ledger(job, settings) as ledger:
        pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    env = {"MAILER_LEDGER_DIR": str(settings.ledger_dir)}
    result = CliRunner().invoke(
        app, ["status", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS), "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"] == {"sent": 5, "failed": 0, "deferred": 0, "pending": 8}
    assert sum(data["segments"]["states"].values()) == 6
    assert sum(data["segments"]["civil-society"].values()) == 5


def test_a_torn_last_ledger_line_is_tolerated(server: Server, tmp_path: Path) -> None:
    settings = settings_for(server.port, tmp_path)
    send(settings)
    path = settings.ledger_dir / "2017-03.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"time": "2026-11-27T00:00:00", "recipient": "resea')
    records = list(read_records(path))
    assert len(records) == 26
    assert send(settings).total.sent == 0  # still complete; the torn line is cut
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_many_temporary_failures_in_a_row_pause_the_run(tmp_path: Path) -> None:
    recipients = write_list(tmp_path / "list", 40)
    everyone = {f"reader{i}@example.org": 99 for i in range(40)}
    with Server(Behaviour(defer_times=everyone)) as server:
        settings = settings_for(server.port, tmp_path)
        policy = RetryPolicy(attempts=2, base=0.01, max_consecutive_transient=6)
        report = send(settings, recipients, policy)
        assert report.stopped is not None and "paused after" in report.stopped
        assert report.total.sent == 0 and not report.complete
        tried = {r["recipient"] for r in ledger_of(settings)}
        assert 3 <= len(tried) < 40  # stopped long before burning the whole list
        outcomes = last_outcomes(settings)
        assert set(outcomes.values()) == {"deferred"}


def test_a_list_rewritten_during_the_send_never_mixes_rows(tmp_path: Path) -> None:
    """A spreadsheet saved mid-send (one row inserted at the top) changes nothing sent."""
    recipients = write_list(tmp_path / "recipients", 60)
    with Server(Behaviour(delay=0.01)) as server:
        settings = settings_for(server.port, tmp_path, recipients_dir=recipients)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        states = recipients / "states.csv"
        original = states.read_text(encoding="utf-8")

        def rewrite_once(outcome: str, message: object) -> None:
            if states.read_text(encoding="utf-8") == original:
                header, _, rows = original.partition("\n")
                states.write_text(f"{header}\nintruder@example.org,Intruder,en\n{rows}")

        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(
                job, settings, ledger, ledger.state(), policy=FAST, progress=rewrite_once
            )
    assert report.total.sent == 60
    names = {r.rcpt: r.message()["To"] for r in server.received}
    assert "intruder@example.org" not in names
    for address, to in names.items():
        number = address.removeprefix("reader").partition("@")[0]
        assert to == f"Reader {number} <{address}>", (address, to)


def test_real_send_asks_before_sending_and_needs_yes_without_a_terminal(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = cli_env(server.port, tmp_path / "ledger")
    args = ["send", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS)]
    no_terminal = CliRunner().invoke(app, args, env=env)
    assert no_terminal.exit_code == 2 and "pass --yes" in no_terminal.output
    monkeypatch.setattr("mailer.cli._interactive", lambda: True)
    declined = CliRunner().invoke(app, args, env=env, input="n\n")
    assert "Send 13 messages? [y/N]" in declined.output and "Nothing sent." in declined.output
    assert server.received == []
    accepted = CliRunner().invoke(app, args, env=env, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert len(server.received) == 13
    assert "all (each address once)" in accepted.output


def test_dispatch_asks_too_and_a_no_sends_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = cli_env(server.port, tmp_path / "ledger")
    args = ["dispatch", "--bulletins", str(SAMPLE.parent), "--recipients", str(SAMPLE_RECIPIENTS)]
    args += ["--now", "2017-03-28T09:15:00+02:00"]
    assert CliRunner().invoke(app, args, env=env).exit_code == 2  # nobody to ask
    monkeypatch.setattr("mailer.cli._interactive", lambda: True)
    declined = CliRunner().invoke(app, args, env=env, input="n\n")
    assert declined.exit_code == 0 and "Nothing sent." in declined.output
    assert "Send 2017-03 now? [y/N]" in declined.output and server.received == []


@pytest.mark.parametrize("offers_dsn", [True, False])
def test_returned_copies_carry_only_headers_where_the_relay_offers_dsn(
    tmp_path: Path, offers_dsn: bool
) -> None:
    """RFC 3461 RET=HDRS keeps bounces small; it is never sent to a relay without DSN."""
    with Server(Behaviour(dsn=offers_dsn)) as relay:
        report = send(settings_for(relay.port, tmp_path))
        lines = relay.handler_obj.mail_lines
    assert report.total.sent == 13 and len(lines) == 13
    assert all(line.endswith(" RET=HDRS") == offers_dsn for line in lines), lines[:2]
