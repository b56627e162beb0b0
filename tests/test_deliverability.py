"""Deliverability: DKIM, one-click unsubscribe, bounces into suppressions, spam score."""

from __future__ import annotations

import csv
import hashlib
import mailbox
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from typer.testing import CliRunner, Result

from mailer import bounces, pipeline
from mailer import status as standing
from mailer.bounces import BounceReport, process
from mailer.cli import app
from mailer.compose import OutgoingMessage
from mailer.errors import InputError
from mailer.ledger import Ledger, read_records
from mailer.settings import Settings
from mailer.signing import generate_key
from mailer.suppressions import suppress
from mailer.unsubscribe import (
    TokenData,
    make_token,
    read_token,
    requests_in_mbox,
)
from mailer.verp import message_id, parse_verp, tag, verp_address

from .conftest import (
    SAMPLE,
    SEND_SETTINGS,
    UNSUBSCRIBE_SECRET,
    compose_sample,
    edit,
    parse,
    require_tool,
)
from .helpers import (
    BOUNCE_ADDRESS,
    BOUNCE_SECRET,
    BOUNCES,
    FAST,
    KEY,
    bounce_bytes,
    sent_with_verp,
    settings_for,
)
from .smtp_server import Server

# -- DKIM -----------------------------------------------------------------------------


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, bytes]:
    """A fresh key pair; returns the private key file and the TXT record to 'publish'."""
    private, record = generate_key(tmp_path / "dkim", "bulletin2026", "isu.example.org")
    txt = record.split('"')[1].encode()
    return private, txt


def _verify(data: bytes, txt: bytes) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"bulletin2026._domainkey.isu.example.org."
        return txt

    return bool(dkim.verify(data, dnsfunc=dns))


def _signed_sample(private: Path) -> list[OutgoingMessage]:
    return compose_sample(
        **SEND_SETTINGS,
        dkim_domain="isu.example.org",
        dkim_selector="bulletin2026",
        dkim_key_file=private,
    )


def test_every_message_carries_a_dkim_signature_dkimpy_verifies(
    dkim_key: tuple[Path, bytes],
) -> None:
    private, txt = dkim_key
    messages = _signed_sample(private)
    for message in messages:
        data = message.data
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        assert _verify(data, txt), message.recipient.email
        signed = re.search(rb"h=([^;]+);", data.replace(b"\r\n ", b"")).group(1)  # type: ignore[union-attr]
        for name in (b"list-unsubscribe", b"list-unsubscribe-post", b"list-id", b"message-id"):
            assert name in signed.split(b":")


def test_tampering_with_list_unsubscribe_breaks_the_signature(
    dkim_key: tuple[Path, bytes],
) -> None:
    private, txt = dkim_key
    data = _signed_sample(private)[0].data
    tampered = re.sub(rb"token=[^&]+", b"token=forged", data, count=1)
    assert tampered != data and not _verify(tampered, txt)
    added_from = data.replace(b"\r\nFrom: ", b"\r\nFrom: evil@example.net\r\nFrom: ", 1)
    assert not _verify(added_from, txt)


def test_signed_message_arrives_verifiable_over_smtp(
    dkim_key: tuple[Path, bytes], server: Server, tmp_path: Path
) -> None:
    private, txt = dkim_key
    settings = settings_for(
        server.port,
        tmp_path,
        dkim_domain="isu.example.org",
        dkim_selector="bulletin2026",
        dkim_key_file=private,
    )
    job = pipeline.prepare(SAMPLE, settings, dry_run=False)
    with pipeline.open_ledger(job, settings) as ledger:
        pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    assert len(server.received) == 13
    assert all(_verify(r.data, txt) for r in server.received)


def test_dkim_keygen_prints_the_dns_record_to_publish(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["dkim-keygen", "news2026", "--domain", "isu.example.org", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert 'news2026._domainkey.isu.example.org. IN TXT "v=DKIM1; k=rsa; p=' in result.output
    key = tmp_path / "news2026.private.pem"
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert oct(key.stat().st_mode & 0o777) == "0o600"


# -- unsubscribe ------------------------------------------------------------------------


def test_unsubscribe_token_round_trip_and_forgery() -> None:
    secret = UNSUBSCRIBE_SECRET.encode()
    token = make_token(secret, "Liaison@Example.org", "2017-03")
    assert read_token(secret, token) == TokenData("Liaison@Example.org", "2017-03", False)
    other = make_token(secret, "someone.else@example.org", "2017-03")
    for forged in (token[:20] + other[20:], token[:-2] + "AA", token[:-3], "garbage", ""):
        with pytest.raises(InputError):
            read_token(secret, forged)
    with pytest.raises(InputError):
        read_token(b"another key", token)
    test_copy = make_token(secret, "Liaison@Example.org", "2017-03", test=True)
    assert read_token(secret, test_copy).test


def _suppressed(directory: Path) -> list[str]:
    with (directory / "suppressions.csv").open(encoding="utf-8") as handle:
        return [row["email"] for row in csv.DictReader(handle)]


def test_unsubscribe_command_takes_tokens_and_refuses_forgeries(
    copy_sample: Callable[[], tuple[Path, Path]],
) -> None:
    _, recipients = copy_sample()
    env = {"MAILER_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET}
    token = make_token(UNSUBSCRIBE_SECRET.encode(), "research@example.com")
    args = ["unsubscribe", "--recipients", str(recipients), "--token"]
    ok = CliRunner().invoke(app, [*args, token], env=env)
    assert ok.exit_code == 0, ok.output
    again = CliRunner().invoke(app, [*args, token], env=env)
    assert "already suppressed: research@example.com" in again.output
    forged = CliRunner().invoke(app, [*args, token[:-3] + "xyz"], env=env)
    assert forged.exit_code == 2 and "not genuine" in forged.output
    assert _suppressed(recipients).count("research@example.com") == 1


def test_mailed_unsubscribe_requests_are_processed_once(
    copy_sample: Callable[[], tuple[Path, Path]], tmp_path: Path
) -> None:
    _, recipients = copy_sample()
    box = mailbox.mbox(str(tmp_path / "requests.mbox"))
    for sender, subject, body in (
        ("Tom Becker <research@example.com>", "unsubscribe", ""),
        ("Elena Ruiz <CAMPAIGNER@example.org>", "Re: Bulletin", "unsubscribe\n\nthanks"),
        ("Someone <question@example.net>", "A question about 7MSP", "When is it?"),
        ("Tom Becker <research@example.com>", "Unsubscribe", ""),
    ):
        box.add(
            f"From: {sender}\nSubject: {subject}\nTo: unsubscribe@isu.example.org\n\n"
            f"{body}\n".encode()
        )
    box.flush()
    senders = requests_in_mbox(tmp_path / "requests.mbox")
    assert senders == ["research@example.com", "CAMPAIGNER@example.org", "research@example.com"]
    first = suppress(recipients, senders, "unsubscribe request by mail")
    assert first.added == ("research@example.com", "CAMPAIGNER@example.org")
    second = suppress(recipients, requests_in_mbox(tmp_path / "requests.mbox"), "again")
    assert second.added == ()
    lines = _suppressed(recipients)
    assert len(lines) == 3 and "question@example.net" not in lines


# -- bounces -----------------------------------------------------------------------------


def test_verp_addresses_name_issue_and_recipient() -> None:
    address = verp_address(BOUNCE_ADDRESS, KEY, "2017-03", "Liaison@Example.org")
    recipient_tag = tag(KEY, "2017-03", "liaison@example.org")
    assert address == f"bounces+2017-03.{recipient_tag}@isu.example.org"
    assert len(address.split("@")[0]) <= 64
    assert parse_verp(address, BOUNCE_ADDRESS) == ("2017-03", recipient_tag)
    # Keyed: without the secret, an address and an issue id do not give the tag.
    assert tag(b"another key", "2017-03", "liaison@example.org") != recipient_tag
    assert parse_verp("bounces@isu.example.org", BOUNCE_ADDRESS) is None
    assert parse_verp(address.replace("isu.", "other."), BOUNCE_ADDRESS) is None


def _process(source: Path, ledger_dir: Path, recipients_dir: Path) -> BounceReport:
    """``mailer bounces``' work, with the test deployment's bounce settings."""
    return process(
        source, ledger_dir, recipients_dir, bounce_address=BOUNCE_ADDRESS, soft_limit=3, key=KEY
    )


def _bounces_cli(source: Path, settings: Settings) -> Result:
    """``mailer bounces SOURCE`` as staff run it."""
    env = {
        "MAILER_LEDGER_DIR": str(settings.ledger_dir),
        "MAILER_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
        "MAILER_BOUNCE_SECRET": BOUNCE_SECRET,
    }
    args = ["bounces", str(source), "--recipients", str(settings.recipients_dir)]
    return CliRunner().invoke(app, args, env=env)


def _mbox_of(names: list[str], path: Path) -> Path:
    box = mailbox.mbox(str(path))
    for name in names:
        box.add(bounce_bytes(name))
    box.flush()
    return path


def test_a_hand_edited_old_ledger_does_not_stop_the_reading_of_bounces(
    server: Server, tmp_path: Path
) -> None:
    """Outcomes became a closed set; one odd line in another issue's ledger then made
    `mailer bounces` exit 2 for every report. Readers across issues skip it."""
    settings = sent_with_verp(server, tmp_path)
    (settings.ledger_dir / "2016-12.jsonl").write_text(
        '{"recipient": "a@example.org", "outcome": "attempt", "attempt": 1}\n'
        '{"recipient": "a@example.org", "outcome": "skipped", "attempt": 1}\n'
        "<<<<<<< HEAD\n"
    )
    source = _mbox_of(["01-postfix-rfc3464.eml"], tmp_path / "bounces.mbox")
    result = _bounces_cli(source, settings)
    assert result.exit_code == 0, result.output
    assert "research@example.com" in _suppressed(settings.recipients_dir)


def test_each_message_has_its_own_verp_envelope_sender(server: Server, tmp_path: Path) -> None:
    sent_with_verp(server, tmp_path)
    for received in server.received:
        assert received.mail_from == verp_address(BOUNCE_ADDRESS, KEY, "2017-03", received.rcpt)


def test_bounce_reports_update_suppressions_exactly_once(server: Server, tmp_path: Path) -> None:
    settings = sent_with_verp(server, tmp_path)
    source = _mbox_of(sorted(p.name for p in BOUNCES.glob("*.eml")), tmp_path / "bounces.mbox")
    report = _process(source, settings.ledger_dir, settings.recipients_dir)
    assert report.read == 7 and report.skipped == []
    # 05 reached the VERP address but names no failed recipient; 06 is a delay notice.
    assert len(report.unattributed) == 2
    assert report.duplicates == 1  # 07 repeats 01
    dead = {
        "research@example.com",  # RFC 3464 from Postfix, VERP, 5.1.1
        "delegation@example.net",  # RFC 3464 without VERP: issue from the quoted Message-ID
        "focal.point@example.com",  # qmail's own format, (#5.1.1)
    }
    assert set(report.suppressed.added) == dead
    suppressed = _suppressed(settings.recipients_dir)
    assert "campaigner@example.org" not in suppressed  # Exim: mailbox full is soft
    assert "survivors@example.com" not in suppressed  # nothing readable: never a reason
    assert "seminar.desk@example.net" not in suppressed  # Action: delayed never counts
    ledger = (settings.ledger_dir / "2017-03.jsonl").read_text(encoding="utf-8")
    assert ledger.count('"outcome": "bounce"') == 4
    assert '"reply": "soft: campaigner@example.org mailbox is full' in ledger
    again = _process(source, settings.ledger_dir, settings.recipients_dir)
    assert again.suppressed.added == () and again.duplicates == 5
    rows = _suppressed(settings.recipients_dir)
    assert sorted(rows) == sorted({*rows}) and dead <= set(rows)
    status = standing.status(pipeline.prepare(SAMPLE, settings), settings)
    # The ledger is the truth: suppressed since, they were still sent (a bounce undoes nothing).
    assert status.total == {"sent": 13, "failed": 0, "deferred": 0, "pending": 0}


def _forged(names: str, quoted_id: str) -> bytes:
    """A delivery report listing ``names`` as failed, quoting ``quoted_id``."""
    template = bounce_bytes("02-rfc3464-no-verp-quoted-id.eml").decode()
    real_id = message_id(KEY, "2017-03", "delegation@example.net", "isu.example.org")
    text = template.replace(real_id, quoted_id).replace(
        "Final-Recipient: RFC822; delegation@example.net", f"Final-Recipient: RFC822; {names}"
    )
    return text.replace("<delegation@example.net>\n", f"<{names}>\n").encode()


def test_forged_bounces_suppress_nobody_and_create_no_ledger(
    server: Server, tmp_path: Path
) -> None:
    settings = sent_with_verp(server, tmp_path)
    old_style = hashlib.sha256(b"ambassador.moreau@example.org").hexdigest()[:12]
    box = mailbox.mbox(str(tmp_path / "forged.mbox"))
    # An unkeyed (computable) VERP tag of a real reader.
    box.add(
        bounce_bytes("05-verp-only.eml").replace(
            tag(KEY, "2017-03", "survivors@example.com").encode(), old_style.encode()
        )
    )
    # A made-up Message-ID of an issue that does not exist.
    box.add(_forged("ambassador.moreau@example.org", "<2099-01.0123456789abcdef01234567@x.org>"))
    # A computable (unkeyed) Message-ID of a real reader.
    plain = message_id(None, "2017-03", "ambassador.moreau@example.org", "isu.example.org")
    box.add(_forged("ambassador.moreau@example.org", plain))
    # A genuine Message-ID (delegation's own), listing another address and an unusable one.
    genuine = message_id(KEY, "2017-03", "delegation@example.net", "isu.example.org")
    box.add(_forged("ambassador.moreau@example.org", genuine))
    box.add(_forged("not an address", genuine).replace(b"v2S7A0@relay", b"v2S7A1@relay"))
    box.flush()
    report = _process(tmp_path / "forged.mbox", settings.ledger_dir, settings.recipients_dir)
    # The genuine Message-ID is delegation's, the report lists someone else: a forward or
    # an alias died, not delegation's own address: soft, never suppressed at once.
    assert report.read == 5 and len(report.unattributed) == 3
    assert report.suppressed.added == ()
    assert [b.verdict for b in report.bounces] == ["soft", "soft"]
    assert "ambassador.moreau@example.org" not in _suppressed(settings.recipients_dir)
    assert sorted(p.name for p in settings.ledger_dir.glob("*.jsonl")) == ["2017-03.jsonl"]


def test_real_world_bounces_from_many_servers_never_stop_the_batch(
    server: Server, tmp_path: Path
) -> None:
    settings = sent_with_verp(server, tmp_path)
    corpus = sorted((BOUNCES / "real-world").glob("*.txt"))
    assert len(corpus) > 100
    box = mailbox.mbox(str(tmp_path / "mixed.mbox"))
    for path in corpus:
        box.add(path.read_bytes())
    box.add(bounce_bytes("01-postfix-rfc3464.eml"))  # ours, after all of them
    box.flush()
    result = _bounces_cli(tmp_path / "mixed.mbox", settings)
    assert result.exit_code == 0, result.output
    assert f"{len(corpus) + 1} message(s) read" in result.output
    assert "skipped:" not in result.output  # qmail_08's unknown charset is read as Latin-1
    assert _suppressed(settings.recipients_dir)[-1:] == ["research@example.com"]
    assert sorted(p.name for p in settings.ledger_dir.glob("*.jsonl")) == ["2017-03.jsonl"]


def test_a_bounce_recorded_before_a_crash_is_still_suppressed(
    server: Server, tmp_path: Path
) -> None:
    settings = sent_with_verp(server, tmp_path)
    source = _mbox_of(["01-postfix-rfc3464.eml"], tmp_path / "one.mbox")
    _process(source, settings.ledger_dir, settings.recipients_dir)
    # As if the first run had died between the ledger and the suppression list.
    path = settings.recipients_dir / "suppressions.csv"
    path.write_text("".join(line for line in path.open() if "research@" not in line))
    again = _process(source, settings.ledger_dir, settings.recipients_dir)
    assert again.duplicates == 1 and again.suppressed.added == ("research@example.com",)


def test_bounces_from_a_maildir_and_the_cli(server: Server, tmp_path: Path) -> None:
    settings = sent_with_verp(server, tmp_path)
    maildir = mailbox.Maildir(str(tmp_path / "Maildir"))
    maildir.add(bounce_bytes("04-qmail.eml"))
    result = _bounces_cli(tmp_path / "Maildir", settings)
    assert result.exit_code == 0, result.output
    assert "suppressed: focal.point@example.com" in result.output


def _soft_bounce(issue: str, action: str) -> bytes:
    """06 (a 4.2.2 mailbox-full report) for ``issue``, with ``action``."""
    template = bounce_bytes("06-rfc3464-temporary.eml", issue).decode()
    bounce = template.replace("2017-03.", f"{issue}.").replace(
        "<20170328-delay-1@", f"<{issue}-{action}@"
    )
    return bounce.replace("Action: delayed", f"Action: {action}").encode()


def _copy_ledger(ledger: Path, *issues: str) -> None:
    """Later issues that went to the same readers, all sent."""
    for issue in issues:
        text = (ledger / "2017-03.jsonl").read_text(encoding="utf-8")
        (ledger / f"{issue}.jsonl").write_text(text.replace("2017-03", issue), encoding="utf-8")


def _one_report(tmp_path: Path, name: str, data: bytes) -> Path:
    box = mailbox.mbox(str(tmp_path / f"{name}.mbox"))
    box.add(data)
    box.flush()
    return tmp_path / f"{name}.mbox"


def test_soft_bounces_on_three_issues_in_a_row_suppress_and_delays_never_count(
    server: Server, tmp_path: Path
) -> None:
    settings = sent_with_verp(server, tmp_path)
    ledger = settings.ledger_dir
    _copy_ledger(ledger, "2017-06", "2017-09")
    for count, issue in enumerate(("2017-03", "2017-06", "2017-09"), start=1):
        delayed = _one_report(tmp_path, f"delayed-{issue}", _soft_bounce(issue, "delayed"))
        assert _process(delayed, ledger, settings.recipients_dir).suppressed.added == ()
        failed = _one_report(tmp_path, f"failed-{issue}", _soft_bounce(issue, "failed"))
        report = _process(failed, ledger, settings.recipients_dir)
        suppressed = "seminar.desk@example.net" in report.suppressed.added
        assert suppressed == (count == 3), issue
    rows = (settings.recipients_dir / "suppressions.csv").read_text()
    assert "seminar.desk@example.net,soft-bounces," in rows


def test_a_delivery_between_soft_bounces_resets_the_count(server: Server, tmp_path: Path) -> None:
    settings = sent_with_verp(server, tmp_path)
    ledger = settings.ledger_dir
    _copy_ledger(ledger, "2017-06", "2017-09", "2017-12")
    for issue in ("2017-03", "2017-09", "2017-12"):  # 2017-06 was delivered
        failed = _one_report(tmp_path, issue, _soft_bounce(issue, "failed"))
        report = _process(failed, ledger, settings.recipients_dir)
        assert report.suppressed.added == (), issue
    assert bounces.soft_failures(ledger, {"seminar.desk@example.net"}, 2) == [
        "seminar.desk@example.net"
    ]
    assert bounces.soft_failures(ledger, {"seminar.desk@example.net"}, 0) == []


# -- the spam judge ---------------------------------------------------------------------------


def _spam_scores(messages: list[bytes], home: Path) -> list[float]:
    """Each message's SpamAssassin score, from one run over an mbox of them all (its
    rules load once: about a second a message before)."""
    spamassassin = require_tool("spamassassin")
    box = mailbox.mbox(str(home / "judged.mbox"))
    for data in messages:
        box.add(data)
    box.flush()
    with (home / "judged.mbox").open("rb") as judged:
        done = subprocess.run(
            [spamassassin, "-x", "-L", "-t", "--mbox", "--cf=use_bayes 0"],
            stdin=judged,
            capture_output=True,
            timeout=300,
            env={**os.environ, "HOME": str(home)},
        )
    scores = [float(s) for s in re.findall(rb"X-Spam-Status: \w+, score=(-?[\d.]+)", done.stdout)]
    assert len(scores) == len(messages), done.stdout[:500]
    return scores


@pytest.mark.system
def test_spamassassin_scores_every_variant_at_most_zero(
    dkim_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    private, _ = dkim_key
    one_per_variant = {m.variant: m.data for m in _signed_sample(private)}
    assert len(one_per_variant) == 9
    scores = _spam_scores(list(one_per_variant.values()), tmp_path)
    assert max(scores) <= 0.0, dict(zip(one_per_variant, scores, strict=True))


@pytest.mark.system
def test_spamassassin_is_known_to_catch_a_bad_message(tmp_path: Path) -> None:
    bad = (
        b"From: WINNER <prize@example.com>\r\nTo: you@example.org\r\n"
        b"Subject: FREE MONEY!!! CLAIM YOUR PRIZE NOW!!!\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><p><b>CLICK HERE</b> to get <font color=red size=7>100% FREE</font> CASH "
        b"no obligation, act now, limited time! Viagra, casino, wire transfer.</p>"
        b"<a href='http://192.0.2.1/claim'>CLICK HERE</a></body></html>\r\n"
    )
    assert _spam_scores([bad], tmp_path)[0] >= 5.0


def test_feedback_id_names_issue_and_segments(sample_messages: list[OutgoingMessage]) -> None:
    for message in sample_messages:
        feedback = parse(message.data)["Feedback-ID"]
        assert (
            feedback
            == f"2017-03:{'+'.join(message.variant.segments)}:bulletin:bulletin.isu.example.org"
        )


def test_check_warns_about_what_inbox_providers_dislike(
    copy_sample: Callable[[], tuple[Path, Path]],
) -> None:
    bulletin, recipients = copy_sample()
    yaml = bulletin / "bulletin.yaml"
    edit(
        yaml, 'subject: "CCM newsletter:', 'subject: "A very long subject line that goes on and on:'
    )
    item = bulletin / "items" / "03-oslo-process-ten-years.md"
    edit(
        item, "link: https://www.clusterconvention.org/", "link: http://www.clusterconvention.org/"
    )
    result = CliRunner().invoke(app, ["check", str(bulletin), "--recipients", str(recipients)])
    assert result.exit_code == 0, result.output
    assert "http://www.clusterconvention.org/ is not https" in result.output
    # One line a finding, naming the variants it concerns (it was one line a variant).
    assert result.output.count("is not https") == 1
    assert "the subject in 'en' has" in result.output
    # The summary rounds sizes as the table does (it said 24 KB beside a table's 25 KB).
    sizes = re.findall(r"│ +(\d+) KB", result.output)  # the table's cells
    summary = " ".join(result.output.split())
    largest = re.search(r"largest HTML (\d+) KB, largest message (\d+) KB", summary)
    assert largest is not None and largest[1] in sizes and largest[2] in sizes
    assert "a real send will refuse to start" in result.output
    # Configured for a real send, those two warnings go away.
    env = {
        "MAILER_FROM": "isu@isu.example.org",
        "MAILER_UNSUBSCRIBE_URL": "https://isu.example.org/u",
        "MAILER_UNSUBSCRIBE_SECRET": "k",
    }
    configured = CliRunner().invoke(
        app, ["check", str(SAMPLE), "--recipients", str(recipients)], env=env
    )
    assert configured.exit_code == 0
    warnings = [line for line in configured.output.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "not DKIM-signed" in warnings[0]


def _check_with(recipients: Path, **env: str) -> Result:
    base = {
        "MAILER_FROM": "ISU <isu@isu.example.org>",
        "MAILER_UNSUBSCRIBE_MAILTO": "u@isu.example.org",
    }
    args = ["check", str(SAMPLE), "--recipients", str(recipients)]
    return CliRunner().invoke(app, args, env={**base, **env})


def test_check_refuses_what_gmail_yahoo_and_dmarc_would(
    copy_sample: Callable[[], tuple[Path, Path]], tmp_path: Path
) -> None:
    """check said OK to a mailto-only unsubscribe for a bulk list, to a DKIM domain that
    is not the From's, and to a password sent in clear to a remote relay."""
    _, recipients = copy_sample()
    bulk = recipients / "civil-society.csv"
    rows = "".join(f"reader{i}@gmail.com,Reader {i},,,en\n" for i in range(5000))
    bulk.write_text("email,name,organization,country,language\n" + rows)
    refused = _check_with(recipients)
    assert refused.exit_code == 2
    assert "5,000 addresses of the lists are at Gmail or Yahoo" in " ".join(refused.output.split())
    one_click = {
        "MAILER_UNSUBSCRIBE_URL": "https://isu.example.org/u",
        "MAILER_UNSUBSCRIBE_SECRET": "k",
    }
    assert _check_with(recipients, **one_click).exit_code == 0
    bulk.write_text("email,name,organization,country,language\nsomeone@yahoo.fr,,,,en\n")
    small = _check_with(recipients)
    assert small.exit_code == 0 and "1 addresses of the lists are at Gmail or Yahoo" in " ".join(
        small.output.split()
    )
    key, _ = generate_key(tmp_path / "dkim", "s1", "mailer-provider.example.net")
    misaligned = _check_with(
        recipients,
        MAILER_DKIM_SELECTOR="s1",
        MAILER_DKIM_KEY_FILE=str(key),
        MAILER_DKIM_DOMAIN="mailer-provider.example.net",
        MAILER_BOUNCE_ADDRESS="bounces@mailer-provider.example.net",
        MAILER_BOUNCE_SECRET="b",
    )
    assert misaligned.exit_code == 2 and "DMARC would fail" in misaligned.output
    aligned = _check_with(
        recipients,
        MAILER_BOUNCE_ADDRESS="bounces@mail.isu.example.org",
        MAILER_BOUNCE_SECRET="b",
    )
    assert aligned.exit_code == 0, aligned.output
    clear = _check_with(
        recipients,
        MAILER_SMTP_HOST="smtp.example.net",
        MAILER_SMTP_SECURITY="none",
        MAILER_SMTP_USERNAME="isu",
        MAILER_SMTP_PASSWORD="secret",
    )
    assert clear.exit_code == 2 and "in clear text" in clear.output and "secret" not in clear.output


def test_check_warns_of_a_deadline_before_the_issue(
    copy_sample: Callable[[], tuple[Path, Path]],
) -> None:
    bulletin, recipients = copy_sample()
    edit(
        bulletin / "items" / "01-7msp-save-the-date.md",
        "deadline: 2017-08-18",
        "deadline: 2017-03-18",
    )
    result = CliRunner().invoke(app, ["check", str(bulletin), "--recipients", str(recipients)])
    assert result.exit_code == 0
    assert "the deadline 2017-03-18 falls before the issue's date" in " ".join(
        result.output.split()
    )


def test_a_bounce_for_an_issue_being_sent_is_recorded_without_waiting(
    server: Server, tmp_path: Path
) -> None:
    """Sync used to stop with exit 2 ("another run is already sending this issue")."""
    settings = sent_with_verp(server, tmp_path)
    source = _mbox_of(["01-postfix-rfc3464.eml"], tmp_path / "one.mbox")
    with Ledger(settings.ledger_dir, "2017-03") as sending:  # a send holds the issue
        report = _process(source, settings.ledger_dir, settings.recipients_dir)
        sending.write_now([])  # the send goes on writing to the same file
    assert report.suppressed.added == ("research@example.com",)
    records = list(read_records(settings.ledger_dir / "2017-03.jsonl"))
    assert [r.recipient for r in records if r.outcome == "bounce"] == ["research@example.com"]


def test_check_names_an_override_that_overrides_nothing_and_a_bare_mailto(
    copy_sample: Callable[[], tuple[Path, Path]], tmp_path: Path
) -> None:
    """A misnamed template override was silently never used; a mailto without a key is the
    bare address, which mailed requests can only be trusted through Authentication-Results."""
    bulletin, recipients = copy_sample()
    own = tmp_path / "templates" / "partials"
    own.mkdir(parents=True)
    (own / "foter.html.j2").write_text("<p>typo</p>")
    env = {"MAILER_TEMPLATES_DIR": str(tmp_path / "templates")}
    env["MAILER_UNSUBSCRIBE_MAILTO"] = "unsubscribe@isu.example.org"
    result = CliRunner().invoke(
        app, ["check", str(bulletin), "--recipients", str(recipients)], env=env
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "partials/foter.html.j2 has no bundled counterpart" in said
    assert "the mailto is the bare address" in said


def test_a_token_refuses_a_nul_in_its_issue_or_address() -> None:
    with pytest.raises(ValueError):
        make_token(b"k", "a@example.org", "evil\0victim@example.org")
