"""`mailer sync` empties a real IMAP mailbox (Dovecot on 127.0.0.1): bounces, unsubscribe
mail and complaints take effect once, then move; automatic replies change nothing."""

from __future__ import annotations

import base64
import imaplib
import mailbox
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mailer import bounces, inbox, pipeline
from mailer.cli import app
from mailer.settings import Settings
from mailer.verp import message_id, verp_address

from .conftest import SAMPLE, require_tool
from .dovecot import PASSWORD, USER, Dovecot
from .helpers import BOUNCE_ADDRESS, BOUNCE_SECRET, FAST, KEY, bounce_bytes, settings_for
from .oauth_server import CLIENT_ID, CLIENT_SECRET, EXPIRED_SECRET, TokenEndpoint
from .smtp_server import Server

pytestmark = pytest.mark.system  # a private Dovecot

ARF = """From: feedback@mailbox-provider.example
To: abuse@isu.example.org
Subject: Complaint about a message
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf"

--arf
Content-Type: text/plain

This is an email abuse report for a message received from 192.0.2.1.
--arf
Content-Type: message/feedback-report

Feedback-Type: {kind}
User-Agent: Provider-FBL/1.0
Version: 1
Original-Rcpt-To: redacted@example.com

--arf
Content-Type: text/rfc822-headers

From: ISU-CCM <newsletter@isu.example.org>
To: redacted
Message-ID: {message_id}
Subject: CCM newsletter

--arf--
"""
# Typed by a person to the bare address; the receiving server vouches for the sender.
UNSUBSCRIBE = (
    "Authentication-Results: mx.isu.example.org; spf=pass smtp.mailfrom=example.org;\r\n"
    " dkim=pass header.d=example.org; dmarc=pass header.from=example.org\r\n"
    "From: Lars Eriksen <disarmament.desk@example.org>\r\nTo: unsubscribe@isu.example.org\r\n"
    "Subject: unsubscribe\r\n\r\nunsubscribe\r\n"
)
AUTO_REPLY = (
    "From: ambassador.moreau@example.org\r\nTo: newsletter@isu.example.org\r\n"
    "Subject: Automatic reply: CCM newsletter\r\nAuto-Submitted: auto-replied\r\n\r\n"
    "I am out of the office until Monday.\r\n"
)
HUMAN = (
    "From: focal.point@example.com\r\nTo: newsletter@isu.example.org\r\n"
    "Subject: Re: CCM newsletter\r\n\r\nThank you, could you send the programme?\r\n"
)


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    binary = require_tool("dovecot")
    if os.geteuid() != 0:
        if os.environ.get("MAILER_REQUIRE_EXTERNAL") == "1":
            pytest.fail("the private Dovecot needs root (to run as nobody)")
        pytest.skip("the private Dovecot needs root to run as nobody")
    with Dovecot(binary) as running:
        yield running


def _sent(tmp_path: Path, imap: Dovecot) -> Settings:
    """The sample sent with VERP through a test relay; settings that read ``imap``."""
    with Server() as relay:
        settings = settings_for(
            relay.port,
            tmp_path,
            bounce_address=BOUNCE_ADDRESS,
            bounce_secret=BOUNCE_SECRET,
            imap_host="127.0.0.1",
            imap_port=imap.port,
            imap_security="none",
            imap_username=USER,
            imap_password=PASSWORD,
            imap_authserv_id="mx.isu.example.org",
        )
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    return settings


def _append(imap: Dovecot, *messages: str | bytes) -> None:
    client = imaplib.IMAP4("127.0.0.1", imap.port)
    client.login(USER, PASSWORD)
    for message in messages:
        data = message.encode() if isinstance(message, str) else message
        client.append("INBOX", None, None, data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    client.logout()


def _count(imap: Dovecot, folder: str) -> int:
    client = imaplib.IMAP4("127.0.0.1", imap.port)
    client.login(USER, PASSWORD)
    kind, data = client.select(f'"{folder}"')
    client.logout()
    return int(data[0] or b"-1") if kind == "OK" else -1


def _env(settings: Settings) -> dict[str, str]:
    return {
        "MAILER_IMAP_HOST": "127.0.0.1",
        "MAILER_IMAP_PORT": str(settings.imap_port),
        "MAILER_IMAP_SECURITY": "none",
        "MAILER_IMAP_USERNAME": USER,
        "MAILER_IMAP_PASSWORD": PASSWORD,
        "MAILER_LEDGER_DIR": str(settings.ledger_dir),
        "MAILER_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
        "MAILER_BOUNCE_SECRET": BOUNCE_SECRET,
        "MAILER_UNSUBSCRIBE_MAILTO": "unsubscribe@isu.example.org",
        "MAILER_IMAP_AUTHSERV_ID": "mx.isu.example.org",
    }


def test_sync_empties_the_mailbox_once_and_a_rerun_changes_nothing(
    tmp_path: Path, imap: Dovecot
) -> None:
    settings = _sent(tmp_path, imap)
    abuse = message_id(KEY, "2017-03", "campaigner@example.org", "isu.example.org")
    not_spam = message_id(KEY, "2017-03", "seminar.desk@example.net", "isu.example.org")
    _append(
        imap,
        bounce_bytes("01-postfix-rfc3464.eml"),
        UNSUBSCRIBE,
        ARF.format(kind="abuse", message_id=abuse),
        ARF.format(kind="not-spam", message_id=not_spam),
        AUTO_REPLY,
        HUMAN,
    )
    recipients = ["--recipients", str(settings.recipients_dir)]
    first = CliRunner().invoke(app, ["sync", *recipients], env=_env(settings))
    assert first.exit_code == 0, first.output
    rows = (settings.recipients_dir / "suppressions.csv").read_text()
    for address in (
        "research@example.com",
        "disarmament.desk@example.org",
        "campaigner@example.org",
    ):
        assert address in rows, address
    assert "seminar.desk@example.net" not in rows  # not-spam never suppresses
    assert "ambassador.moreau@example.org" not in rows  # an auto-reply changes nothing
    assert (_count(imap, "INBOX"), _count(imap, "Processed")) == (1, 5)  # the human reply stays
    assert "mailbox: 1 × automatic reply" in first.output  # effects reported by kind
    assert "mailbox: 1 × left for staff" in first.output
    second = CliRunner().invoke(app, ["sync", *recipients], env=_env(settings))
    assert second.exit_code == 0 and "suppressed:" not in second.output
    assert (settings.recipients_dir / "suppressions.csv").read_text() == rows


def _tagged(reader: str, tag_of: str | None = None) -> str:
    """An unsubscribe as Apple Mail sends it from List-Unsubscribe's mailto: to the reader's
    own address, an empty subject, marked automatic, From whoever forwards the reader's mail."""
    to = verp_address("unsubscribe@isu.example.org", KEY, "2017-03", tag_of or reader)
    return (
        f"From: Secretariat Assistant <assistant@other.example>\r\nTo: {to}\r\n"
        "Subject: \r\nAuto-Submitted: auto-replied\r\nX-Apple-Unsubscribe: true\r\n\r\n"
        "Apple Mail sent this email to unsubscribe from the message.\r\n"
    )


FORGED = (
    "Authentication-Results: mx.isu.example.org; spf=fail smtp.mailfrom=example.com;\r\n"
    " dkim=fail header.d=example.com; dmarc=fail (p=none) header.from=example.com\r\n"
    "From: Ana Lucia Perez <mision.ginebra@example.com>\r\nTo: unsubscribe@isu.example.org\r\n"
    "Subject: unsubscribe\r\n\r\nunsubscribe\r\n"
)
# A forger adds a passing header below the receiving server's own (RFC 8601 §5).
FORGED_BELOW = (
    "Authentication-Results: mx.isu.example.org; dmarc=fail header.from=example.net\r\n"
    "Authentication-Results: mx.isu.example.org; dmarc=pass header.from=example.net\r\n"
    "From: geneva.mission@example.net\r\nTo: unsubscribe@isu.example.org\r\n"
    "Subject: unsubscribe\r\n\r\nunsubscribe\r\n"
)


def test_a_mailed_unsubscribe_is_trusted_by_proof_never_by_its_from_alone(
    tmp_path: Path, imap: Dovecot
) -> None:
    settings = _sent(tmp_path, imap)
    _append(
        imap,
        _tagged("ambassador.moreau@example.org"),  # genuine tag: unsubscribes the reader
        _tagged("focal.point@example.com").replace("2017-03.", "2017-03.0"),  # broken tag
        FORGED,  # dmarc=fail: a domain with p=none delivers it
        FORGED_BELOW,
        UNSUBSCRIBE,  # dmarc=pass at our own server
    )
    result = inbox.read_mailbox(settings, settings.recipients_dir)
    assert result.error is None, result
    assert sorted(result.added) == ["ambassador.moreau@example.org", "disarmament.desk@example.org"]
    rows = (settings.recipients_dir / "suppressions.csv").read_text()
    # The subaddress named the issue: the report counts the request for it exactly.
    assert "ambassador.moreau@example.org,unsubscribe request by mail (issue 2017-03)," in rows
    assert "disarmament.desk@example.org,unsubscribe request by mail," in rows  # bare address
    for kept in ("focal.point@", "mision.ginebra@", "geneva.mission@", "assistant@"):
        assert kept not in rows, kept
    assert result.effects == {"unsubscribe request": 2, "left for staff": 3}
    assert (_count(imap, "INBOX"), _count(imap, "Processed")) == (3, 2)


def test_a_crash_between_recording_and_moving_processes_nothing_twice(
    tmp_path: Path, imap: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _sent(tmp_path, imap)
    _append(imap, bounce_bytes("01-postfix-rfc3464.eml"))

    def crash(*args: object) -> None:
        raise OSError("connection lost before the move")

    with monkeypatch.context() as patched:
        patched.setattr(inbox, "_move", crash)
        crashed = inbox.read_mailbox(settings, settings.recipients_dir)
    assert crashed.error is not None and _count(imap, "INBOX") == 1
    ledger = settings.ledger_dir / "2017-03.jsonl"
    bounces_before = ledger.read_text().count('"outcome": "bounce"')
    rerun = inbox.read_mailbox(settings, settings.recipients_dir)
    assert rerun.error is None and rerun.added == []  # suppressed the first time
    assert ledger.read_text().count('"outcome": "bounce"') == bounces_before == 1
    assert (_count(imap, "INBOX"), _count(imap, "Processed")) == (0, 1)


def test_an_unreachable_mailbox_exits_1(tmp_path: Path) -> None:
    env = {
        "MAILER_IMAP_HOST": "127.0.0.1",
        "MAILER_IMAP_PORT": "1",
        "MAILER_IMAP_SECURITY": "none",
        "MAILER_IMAP_USERNAME": USER,
        "MAILER_IMAP_PASSWORD": PASSWORD,
        "MAILER_LEDGER_DIR": str(tmp_path / "ledger"),
    }
    result = CliRunner().invoke(app, ["sync", "--recipients", str(tmp_path)], env=env)
    assert result.exit_code == 1 and "could not be read" in result.output


def test_the_mailbox_signs_in_with_oauth2_and_a_refused_client_is_reported(
    tmp_path: Path,
) -> None:
    binary = require_tool("dovecot")
    if os.geteuid() != 0:
        pytest.skip("the private Dovecot needs root to run as nobody")
    with TokenEndpoint() as tokens:
        tokens.username = USER  # the mailbox a valid token opens
        with Dovecot(binary, tokens.introspection_url) as imap:
            _append(imap, UNSUBSCRIBE)
            settings = settings_for(
                25,  # no SMTP in this test
                tmp_path,
                imap_host="127.0.0.1",
                imap_port=imap.port,
                imap_security="none",
                imap_username=USER,
                imap_auth="xoauth2",
                oauth_token_url=tokens.url,
                oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET,
                oauth_scope="https://outlook.office365.com/.default",
                imap_authserv_id="mx.isu.example.org",
            )
            done = inbox.read_mailbox(settings, settings.recipients_dir)
            assert done.error is None and done.added == ["disarmament.desk@example.org"]
            assert _count(imap, "Processed") == 1 and len(tokens.requests) == 1
            # A token Dovecot does not accept for this mailbox: its XOAUTH2 error challenge
            # gets an empty response, then a refusal in one line (exit 2).
            tokens.username = "someone.else"
            wrong = inbox.read_mailbox(settings, settings.recipients_dir)
            assert wrong.fatal and wrong.error and "refused the sign-in" in wrong.error
            tokens.username = USER
            tokens.refusal = EXPIRED_SECRET
            refused = inbox.read_mailbox(settings, settings.recipients_dir)
    assert refused.error is not None and "client secret has expired" in refused.error
    assert CLIENT_SECRET not in refused.error and refused.fatal


def test_a_folder_recreated_during_sync_moves_nothing(
    tmp_path: Path, imap: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client deletes and recreates the folder while sync writes its effects: the
    UIDs sync holds now name other messages, and none of them may be moved."""
    settings = _sent(tmp_path, imap).model_copy(update={"imap_folder": "Bounces"})
    other = imaplib.IMAP4("127.0.0.1", imap.port)
    other.login(USER, PASSWORD)
    other.create("Bounces")
    other.append("Bounces", None, None, UNSUBSCRIBE.encode())
    real_apply = inbox._apply

    def recreated_meanwhile(*args: Any, **kwargs: Any) -> Any:
        handled = real_apply(*args, **kwargs)  # the effects, for real
        other.delete("Bounces")
        time.sleep(1.1)  # Dovecot takes a new folder's UIDVALIDITY from the clock's second
        other.create("Bounces")
        other.append("Bounces", None, None, HUMAN.encode())  # takes UID 1 again
        return handled

    monkeypatch.setattr(inbox, "_apply", recreated_meanwhile)
    result = inbox.read_mailbox(settings, settings.recipients_dir)
    other.logout()
    assert result.error is not None and "UIDVALIDITY" in result.error, result.error
    assert (_count(imap, "Bounces"), _count(imap, "Processed")) == (1, 0)


def test_a_refused_password_is_one_line_and_exit_2(tmp_path: Path, imap: Dovecot) -> None:
    settings = _sent(tmp_path, imap)
    env = {**_env(settings), "MAILER_IMAP_PASSWORD": "not-the-password"}
    result = CliRunner().invoke(
        app, ["sync", "--recipients", str(settings.recipients_dir)], env=env
    )
    assert result.exit_code == 2, result.output
    assert "refused the sign-in" in result.output and "MAILER_IMAP_PASSWORD" in result.output
    assert "not-the-password" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_done_folder_named_in_french_is_created_and_used(tmp_path: Path, imap: Dovecot) -> None:
    """``Traités`` crashed: IMAP folder names are modified UTF-7 (RFC 3501 §5.1.3)."""
    settings = _sent(tmp_path, imap)
    _append(imap, bounce_bytes("01-postfix-rfc3464.eml"), AUTO_REPLY)
    env = {**_env(settings), "MAILER_IMAP_DONE_FOLDER": "Traités"}
    result = CliRunner().invoke(
        app, ["sync", "--recipients", str(settings.recipients_dir)], env=env
    )
    assert result.exit_code == 0, result.output
    assert (_count(imap, "INBOX"), _count(imap, "Trait&AOk-s")) == (0, 2)


def _large_reply(size: int) -> bytes:
    """A person's reply with a large attachment (a scanned letter, say)."""
    blob = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return (
        b"From: focal.point@example.com\r\nTo: newsletter@isu.example.org\r\n"
        b"Subject: Re: CCM newsletter\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/plain\r\n\r\nPlease find our letter attached.\r\n"
        b"--R\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + blob
        + b"--R--\r\n"
    )


def _large_report() -> bytes:
    """An Exchange-style report attaching the whole original: 3 MB of images."""
    report = bounce_bytes("01-postfix-rfc3464.eml").decode()
    image = base64.encodebytes(os.urandom(2_200_000)).decode().replace("\n", "\r\n")
    whole = (
        "MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=O\r\n\r\n"
        "--O\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + image
        + "--O--\r\n"
    )
    report = report.replace("Content-Type: text/rfc822-headers", "Content-Type: message/rfc822")
    ending = "\n--4F2A1.1490684712/mx.example.com--"
    head, _, _ = report.rpartition(ending)
    return (
        head.rstrip("\n").replace("\n", "\r\n")
        + "\r\n"
        + whole
        + ending.replace("\n", "\r\n")
        + "\r\n"
    ).encode()


def test_large_messages_are_read_by_structure_and_staffs_mail_only_once(
    tmp_path: Path, imap: Dovecot
) -> None:
    settings = _sent(tmp_path, imap)
    _append(imap, _large_reply(3_000_000), _large_report(), HUMAN)
    folder = 3 * 4_000_000
    before = imap.bytes_sent()
    recipients = ["--recipients", str(settings.recipients_dir)]
    first = CliRunner().invoke(app, ["sync", *recipients], env=_env(settings))
    assert first.exit_code == 0, first.output
    assert "research@example.com" in (settings.recipients_dir / "suppressions.csv").read_text()
    assert (_count(imap, "INBOX"), _count(imap, "Processed")) == (2, 1)
    read = imap.bytes_sent() - before
    assert read < 1_000_000, read  # the report's parts and the replies' first lines
    again = CliRunner().invoke(app, ["sync", *recipients], env=_env(settings))
    assert "2 × left for staff (already seen)" in again.output
    assert imap.bytes_sent() - before - read < 20_000  # nothing read again
    assert folder > 10 * read


def _why_findings() -> dict[str, bytes]:
    """The issue's findings as messages to a real send: each one lost a reader before."""
    verp = verp_address(BOUNCE_ADDRESS, KEY, "2017-03", "ambassador.moreau@example.org")
    exim = bounce_bytes("03-exim-nonstandard.eml").decode()
    corpus = Path(__file__).parent / "fixtures" / "inbound-corpus" / "messages"
    japanese = (corpus / "lhost-office365-10.eml").read_bytes()
    target = verp_address(BOUNCE_ADDRESS, KEY, "2017-03", "geneva.mission@example.net")
    return {
        # An out-of-office without the usual headers, in German, at the VERP address.
        "automatische antwort": (
            f"To: {verp}\r\nFrom: ambassador.moreau@example.org\r\n"
            "Auto-Submitted: auto-generated\r\n"
            "Subject: =?utf-8?q?Automatische_Antwort=3A_CCM_newsletter?=\r\n\r\n"
            "Ich bin bis zum 5. Mai nicht im Buero.\r\n"
        ).encode(),
        # A ticket system's acknowledgement: a person's reply for all we know.
        "ticket": (
            f"To: {verp}\r\nFrom: helpdesk@example.org\r\n"
            "Subject: [Ticket #48213] Re: CCM newsletter\r\n\r\n"
            "Your request has been received and will be handled shortly.\r\n"
        ).encode(),
        # Exim marks its bounces auto-replied, as RFC 3834 allows: still a bounce.
        "exim auto-replied": exim.replace(
            "Subject: Mail delivery failed",
            "Auto-Submitted: auto-replied\nX-Failed-Recipients: campaigner@example.org\n"
            "Subject: Mail delivery failed",
        )
        .replace("mailbox is full: retry timeout exceeded", "550 5.1.1 No such user")
        .encode(),
        # A policy refusal: recorded for staff, never a reason to suppress.
        "policy": bounce_bytes("01-postfix-rfc3464.eml")
        .replace(b"5.1.1", b"5.7.1")
        .replace(b"User unknown in local recipient table", b"Message refused by policy")
        .replace(b"v2S7A0@relay", b"v2S7Apolicy@relay"),
        # An Office 365 report in iso-2022-jp (as_string() could not read it).
        "iso-2022-jp": f"Delivered-To: {target}\r\n".encode()
        + re.sub(rb"(?i)kijitora@[a-z0-9.]+", b"geneva.mission@example.net", japanese),
    }


WHY_EFFECTS = {
    "automatische antwort": "automatic reply",
    "ticket": "left for staff",
    "exim auto-replied": "bounce (hard)",
    "policy": "bounce (refused)",
    "iso-2022-jp": "bounce (",
}


def test_the_findings_have_the_same_effect_through_bounces_and_sync(
    tmp_path: Path, imap: Dovecot
) -> None:
    findings = _why_findings()
    by_file = _sent(tmp_path / "file", imap)
    box = mailbox.mbox(str(tmp_path / "findings.mbox"))
    for data in findings.values():
        box.add(data)
    box.flush()
    from_file = bounces.process(
        tmp_path / "findings.mbox",
        by_file.ledger_dir,
        by_file.recipients_dir,
        bounce_address=BOUNCE_ADDRESS,
        soft_limit=3,
        key=KEY,
        window=by_file.dispatch_window,
    )
    for name, effect in zip(findings, from_file.effects, strict=True):
        assert effect.startswith(WHY_EFFECTS[name]), (name, effect)
    by_imap = _sent(tmp_path / "imap", imap)
    _append(imap, *findings.values())
    synced = CliRunner().invoke(
        app, ["sync", "--recipients", str(by_imap.recipients_dir)], env=_env(by_imap)
    )
    assert synced.exit_code == 0, synced.output
    rows = (by_imap.recipients_dir / "suppressions.csv").read_text()
    assert "campaigner@example.org" in rows  # the Exim bounce, despite Auto-Submitted
    for kept in ("ambassador.moreau@", "research@", "geneva.mission@"):
        assert kept not in rows, kept
    assert rows == (by_file.recipients_dir / "suppressions.csv").read_text()
    assert (_count(imap, "INBOX"), _count(imap, "Processed")) == (1, 4)  # the ticket stays


def test_imaplib_still_has_the_line_limit_the_mailbox_reader_raises() -> None:
    """inbox.LONGEST_LINE relies on imaplib's private _MAXLINE: fail loudly if it goes."""
    assert isinstance(getattr(imaplib, "_MAXLINE", None), int)


def _forwarding_hundreds() -> bytes:
    """A reply forwarding 500 messages, each to 40 people: its BODYSTRUCTURE is one line
    of over a megabyte, more than imaplib reads by default."""
    to = ", ".join(f"person{i}@example.org" for i in range(40))
    attached = "".join(
        f"--F\r\nContent-Type: message/rfc822\r\n\r\nFrom: a{n}@example.org\r\nTo: {to}\r\n"
        f"Subject: forwarded {n}\r\n\r\nText {n}.\r\n"
        for n in range(500)
    )
    return (
        "From: focal.point@example.com\r\nTo: newsletter@isu.example.org\r\n"
        "Subject: Re: CCM newsletter\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThe correspondence you asked for.\r\n"
        + attached
        + "--F--\r\n"
    ).encode()


def test_a_message_with_a_huge_structure_stops_nothing(tmp_path: Path, imap: Dovecot) -> None:
    """Such a message stopped every sync ("got more than 1000000 bytes"), and every
    bounce after it stayed in the folder."""
    settings = _sent(tmp_path, imap)
    _append(imap, _forwarding_hundreds(), bounce_bytes("01-postfix-rfc3464.eml"))
    result = CliRunner().invoke(
        app, ["sync", "--recipients", str(settings.recipients_dir)], env=_env(settings)
    )
    assert result.exit_code == 0, result.output
    assert "research@example.com" in (settings.recipients_dir / "suppressions.csv").read_text()
    assert (_count(imap, "INBOX"), _count(imap, "Processed")) == (1, 1)


def _large_report_without_verp(returned_type: str) -> bytes:
    """A report to the sending mailbox (no VERP: Microsoft 365), over 256 KB, that only our
    Message-ID in the returned message can attribute."""
    ours = message_id(KEY, "2017-03", "research@example.com", "isu.example.org")
    received = "".join(
        f"Received: from relay{i}.example.net by mx.example.net\r\n" for i in range(6000)
    )
    if returned_type == "text/rfc822-headers":  # the Message-ID after 300 KB of headers
        returned = received + f"Message-ID: {ours}\r\nSubject: CCM newsletter\r\n"
    else:  # message/global: a small header, a large body
        returned = f"Message-ID: {ours}\r\nSubject: CCM newsletter\r\n\r\n" + "x" * 300_000 + "\r\n"
    return (
        "From: postmaster@example.com\r\nTo: newsletter@isu.example.org\r\n"
        "Subject: Undeliverable: CCM newsletter\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        "--R\r\nContent-Type: text/plain\r\n\r\nDelivery has failed.\r\n"
        "--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n"
        "\r\nFinal-Recipient: rfc822; research@example.com\r\nAction: failed\r\n"
        "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
        f"--R\r\nContent-Type: {returned_type}\r\n\r\n{returned}\r\n--R--\r\n"
    ).encode()


@pytest.mark.parametrize("returned_type", ["text/rfc822-headers", "message/global"])
def test_a_large_report_attributed_only_by_message_id_is_not_lost(
    tmp_path: Path, imap: Dovecot, returned_type: str
) -> None:
    """Read by structure, such a report lost our Message-ID (past the first 64 KB, or in a
    message/global part) and was moved away as 'nothing done'."""
    settings = _sent(tmp_path, imap)
    _append(imap, _large_report_without_verp(returned_type))
    result = inbox.read_mailbox(settings, settings.recipients_dir)
    assert result.effects == {"bounce (hard)": 1}, result.effects
    assert result.added == ["research@example.com"]
