"""What comes back, judged against real-world mail nobody here wrote.

The corpus (``fixtures/inbound-corpus``, BSD-licensed, see its SOURCE.md) holds
593 delivery reports, complaints and automatic replies from some 80 mail
servers and providers, each with the verdict of an established classifier
(sisimai). Every message must be read; none may be attributed to a reader it
does not name; and rewritten to bounce one of our own messages (our VERP
address, our reader's address in the report), no refusal for policy or
reputation may suppress the reader.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from mailer import bounces, inbound
from mailer.inbound import Kind
from mailer.ledger import read_records
from mailer.replies import Returned, read_returned
from mailer.settings import Settings
from mailer.unsubscribe import authenticated, mailed_request
from mailer.verp import message_id, verp_address

from .helpers import BOUNCE_ADDRESS, BOUNCE_SECRET, KEY, sent_with_verp, settings_for
from .smtp_server import Server

CORPUS = Path(__file__).parent / "fixtures" / "inbound-corpus"
FLUFL = Path(__file__).parent / "fixtures" / "bounces" / "real-world"
EXPECTED: dict[str, list[dict[str, object]]] = {
    name: rows
    for name, rows in json.loads((CORPUS / "expected.json").read_text()).items()
    if not name.startswith("_")
}
READER = "research@example.com"  # one of the sample's readers
# Refusals about us (policy, reputation, authentication, content, rate): never a dead address.
POLICY = {
    "blocked",
    "policyviolation",
    "spamdetected",
    "securityerror",
    "badreputation",
    "requireptr",
    "authfailure",
    "virusdetected",
    "contenterror",
    "norelaying",
    "notcompliantrfc",
    "speeding",
    "exceedlimit",
    "mesgtoobig",
    "syntaxerror",
    "toomanyconn",
    "failedstarttls",
}
# Where the classifier's label is not ours to follow, and why.
NOT_OURS = {
    "lhost-amazonses-11.eml": "an Amazon SNS complaint in JSON: we do not send through SES",
    "arf-26.eml": "Apple Mail's opt-out, sent to another list's address: automatic for us",
    "lhost-fml-02.eml": "a mailing-list manager's notice to a non-member",
    "lhost-fml-03.eml": "a mailing-list manager's loop alert",
    "lhost-kddi-01.eml": "a carrier's notice with no standard part, sender or subject",
    "lhost-kddi-02.eml": "a carrier's notice with no standard part, sender or subject",
    "lhost-kddi-03.eml": "a carrier's notice with no standard part, sender or subject",
    "lhost-sendmail-14.eml": "a person forwarding a bounce (Fwd:): left for staff",
}


def _corpus() -> list[Path]:
    return sorted((CORPUS / "messages").glob("*.eml"))


def _expected_kind(name: str) -> Kind:
    reasons = {str(row["reason"]) for row in EXPECTED[name]}
    if reasons == {"vacation"}:
        return Kind.AUTOMATIC
    if reasons == {"feedback"}:
        return Kind.COMPLAINT
    return Kind.REPORT


def test_every_real_world_message_is_read_and_classed_as_the_classifier_says() -> None:
    kinds: Counter[str] = Counter()
    wrong = []
    for path in _corpus() + sorted(FLUFL.glob("*.txt")):
        message = inbound.parse(path.read_bytes())
        kind = inbound.classify(message, unsubscribe_address="unsubscribe@isu.example.org")
        assert kind is not Kind.UNREADABLE, path.name
        inbound.failures(message)  # never raises
        kinds[kind] += 1
        known = path.name in EXPECTED and path.name not in NOT_OURS
        if known and kind is not _expected_kind(path.name):
            wrong.append((path.name, kind))
    assert wrong == []
    assert len(_corpus()) >= 590 and kinds[Kind.REPORT] >= 650


def test_a_delivery_report_is_never_taken_for_an_automatic_reply() -> None:
    """Exim, Google Groups and 1&1 mark bounces ``Auto-Submitted: auto-replied``."""
    marked = 0
    for path in _corpus():
        raw = path.read_bytes()
        auto = re.search(rb"^Auto-Submitted:\s*auto-replied", raw, re.MULTILINE | re.IGNORECASE)
        if auto and path.name in EXPECTED and _expected_kind(path.name) is Kind.REPORT:
            marked += 1
            assert inbound.classify(inbound.parse(raw)) is Kind.REPORT, path.name
    assert marked >= 50


def test_iso_2022_jp_reports_are_read() -> None:
    japanese = [p for p in _corpus() if b"iso-2022-jp" in p.read_bytes().lower()]
    assert len(japanese) >= 15
    for path in japanese:
        message = inbound.parse(path.read_bytes())
        assert inbound.classify(message) is not Kind.UNREADABLE, path.name


def test_the_classifiers_hard_set_and_ours_agree_except_on_words_that_name_a_dead_address() -> None:
    """Ours suppresses at once only where the code or the words prove the address dead;
    never for a refusal about us, whatever its code claims."""
    agree = total = 0
    for name, rows in EXPECTED.items():
        if name in NOT_OURS or _expected_kind(name) is not Kind.REPORT:
            continue
        found = inbound.failures(inbound.parse((CORPUS / "messages" / name).read_bytes()))
        if len(found) != 1 or len(rows) != 1:
            continue  # several recipients: the two list them in different orders
        ours, theirs = found[0], rows[0]
        total += 1
        agree += (ours.verdict is Returned.HARD) == bool(theirs["hard"])
        if theirs["reason"] in POLICY:
            assert ours.verdict is not Returned.HARD, (name, ours)
    # Measured: 409 of 468 (87%); the rest are mostly X.2.1 and X.4.4 "user unknown" and
    # "host not found", which RFC 3463 makes soft (the soft-bounce limit catches them).
    assert total >= 460 and agree >= 405, (agree, total)


# -- rewritten to bounce one of our own messages -------------------------------------------


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real local send of the sample with VERP: its ledger and recipients, once."""
    folder = tmp_path_factory.mktemp("sent")
    with Server() as relay:
        sent_with_verp(relay, folder)
    return folder


@pytest.fixture
def copy(sent: Path, tmp_path: Path) -> Iterator[Settings]:
    for name in ("ledger", "recipients"):
        shutil.copytree(sent / name, tmp_path / name)
    yield settings_for(1, tmp_path, bounce_address=BOUNCE_ADDRESS, bounce_secret=BOUNCE_SECRET)


def _process(settings: Settings, messages: list[bytes]) -> bounces.BounceReport:
    return bounces.process_messages(
        messages,
        settings.ledger_dir,
        settings.recipients_dir,
        bounce_address=BOUNCE_ADDRESS,
        soft_limit=3,
        key=KEY,
        window=settings.dispatch_window,
        unsubscribe_address="unsubscribe@isu.example.org",
    )


def _rewritten(raw: bytes, failed: str, *, verp: bool = True) -> bytes:
    """``raw`` as if it bounced our message to READER: the report's address replaced by
    the reader's, and our VERP address on top (or our Message-ID quoted in it)."""
    data = re.sub(re.escape(failed.encode()), READER.encode(), raw, flags=re.IGNORECASE)
    if verp:
        verp_to = verp_address(BOUNCE_ADDRESS, KEY, "2017-03", READER)
        return f"Delivered-To: {verp_to}\r\n".encode() + data
    ours = message_id(KEY, "2017-03", READER, "isu.example.org").encode()
    return re.sub(rb"(?im)^(Message-ID:\s*)<[^>\r\n]+>(?=\s*$)", rb"\1" + ours, data)


def test_no_real_world_message_is_attributed_to_a_reader_it_does_not_name(copy: Settings) -> None:
    data = [p.read_bytes() for p in _corpus() + sorted(FLUFL.glob("*.txt"))]
    report = _process(copy, data)
    assert report.read == len(data) and report.skipped == []
    assert report.bounces == [] and report.complaints == [] and report.requests == []
    assert report.suppressed.added == ()
    assert [p.name for p in copy.ledger_dir.glob("*.jsonl")] == ["2017-03.jsonl"]


def test_rewritten_reports_suppress_only_dead_addresses(copy: Settings) -> None:
    """Every real report, rewritten to bounce our message to READER (with VERP), has the
    effect its reader's entry calls for; a policy refusal never suppresses."""
    effects: Counter[str] = Counter()
    for name in sorted(EXPECTED):
        if name in NOT_OURS or _expected_kind(name) is not Kind.REPORT:
            continue
        raw = (CORPUS / "messages" / name).read_bytes()
        found = inbound.failures(inbound.parse(raw))
        if len(found) != 1 or len(EXPECTED[name]) != 1:
            continue
        report = _process(copy, [_rewritten(raw, found[0].address)])
        effect = report.effects[0]
        effects[effect] += 1
        assert effect.startswith(("bounce (", "delivery report")), (name, effect)
        if EXPECTED[name][0]["reason"] in POLICY:
            assert effect != "bounce (hard)", name
        assert (READER in report.suppressed.added) == (effect == "bounce (hard)"), name
        _undo(copy)
    assert effects["bounce (hard)"] >= 100 and effects["bounce (refused)"] >= 100
    assert effects["bounce (soft)"] >= 80


def _undo(settings: Settings) -> None:
    """Forget READER's suppression and bounces, for the next report."""
    path = settings.recipients_dir / "suppressions.csv"
    path.write_text("".join(line for line in path.open() if READER not in line))
    ledger = settings.ledger_dir / "2017-03.jsonl"
    ledger.write_text("".join(line for line in ledger.open() if '"outcome": "bounce"' not in line))


@pytest.mark.parametrize(
    ("name", "verp", "effect"),
    [
        ("lhost-postfix-01.eml", True, "bounce (hard)"),  # 5.1.1 from Postfix
        ("lhost-qmail-01.eml", True, "bounce (hard)"),  # "550 Unknown user" under a bare #5.5.0
        ("lhost-exim-01.eml", True, None),
        ("lhost-gmail-01.eml", True, None),
        ("lhost-sendmail-33.eml", True, "bounce (refused)"),  # 5.7.1 blacklisted, Status 5.1.1
        ("rhost-godaddy-02.eml", True, "bounce (refused)"),  # Spamhaus listing, Status 5.1.3
        ("lhost-x3-06.eml", True, "bounce (soft)"),  # 552 5.2.2 Over quota, Status 5.1.1
        ("lhost-postfix-05.eml", True, "bounce (soft)"),  # 450 4.1.1: class 4 is never final
        ("lhost-office365-01.eml", False, "bounce (hard)"),  # no DSN part: our quoted id
        ("lhost-office365-02.eml", False, None),
        ("lhost-office365-10.eml", True, None),  # iso-2022-jp
        ("rfc3834-01.eml", True, "automatic reply"),  # auto-replied, to our VERP address
        ("arf-01.eml", True, None),
    ],
)
def test_a_dozen_real_reports_bouncing_our_message_have_their_exact_effect(
    copy: Settings, name: str, verp: bool, effect: str | None
) -> None:
    raw = (CORPUS / "messages" / name).read_bytes()
    message = inbound.parse(raw)
    found = inbound.failures(message)
    address = found[0].address if found else "nobody@nowhere.invalid"
    report = _process(copy, [_rewritten(raw, address, verp=verp)])
    expected = effect or _derived(name, message, found)
    assert report.effects == [expected]
    records = [r for r in read_records(copy.ledger_dir / "2017-03.jsonl") if r.outcome == "bounce"]
    if expected.startswith("bounce ("):
        assert [r.recipient for r in records] == [READER]
        assert records[0].reply and records[0].reply.startswith(expected[8:-1])
    else:
        assert records == []
    assert (READER in report.suppressed.added) == (
        expected in ("bounce (hard)", "complaint (abuse): suppressed")
    )


def _derived(name: str, message: object, found: list[inbound.Failure]) -> str:
    """The effect the one table calls for, for rows whose text is long to spell out."""
    if name.startswith("arf-"):
        return "complaint (abuse): suppressed"
    entry = found[0]
    return f"bounce ({read_returned(entry.action, entry.status, entry.text)})"


# -- what a mailed unsubscribe's Authentication-Results may vouch for ----------------------

OURS = "mx.isu.example.org"


def _asking(*results: str, sender: str = "victim@example.com") -> Message:
    headers = "".join(f"Authentication-Results: {value}\r\n" for value in results)
    raw = f"{headers}From: {sender}\r\nTo: unsubscribe@isu.example.org\r\nSubject: unsubscribe\r\n"
    return inbound.parse((raw + "\r\nunsubscribe\r\n").encode())


@pytest.mark.parametrize(
    ("results", "trusted"),
    [
        ((f"{OURS}; dmarc=pass header.from=example.com",), True),
        ((f"{OURS}; dkim=pass header.d=example.com; dmarc=none",), True),
        ((f"{OURS}; dkim=pass header.d=mail.example.com",), True),  # relaxed alignment
        ((f"{OURS}; dkim=pass header.i=@example.com",), True),
        # A service provider's signature first, then the From domain's own.
        ((f"{OURS}; dkim=pass header.d=esp.example; dkim=pass header.d=example.com",), True),
        ((f"{OURS}; dkim=fail header.d=example.com; dkim=pass header.d=example.com",), True),
        ((f"{OURS}; spf=fail; dkim=fail header.d=example.com; dmarc=fail (p=none)",), False),
        ((f"{OURS}; dkim=pass header.d=attacker.example",), False),
        ((f"{OURS}; dkim=pass header.d=com",), False),  # a top-level domain aligns nothing
        ((f"{OURS}; dmarc=pass header.from=attacker.example",), False),
        # Injections: a result inside a quoted value or a comment is no result.
        ((f'{OURS}; spf=pass smtp.mailfrom="x; dmarc=pass "@e.example; dmarc=fail',), False),
        ((f"{OURS}; spf=pass (a;dmarc=pass b) smtp.mailfrom=e.example; dmarc=fail",), False),
        # Only the topmost header of our own server: a forger's copy sits below it.
        ((f"{OURS}; dmarc=fail", f"{OURS}; dmarc=pass"), False),
        # Another server's results, or none with a name: nothing vouches.
        (("mx.attacker.example; dmarc=pass header.from=example.com",), False),
        (("spf=pass smtp.mailfrom=example.com; dmarc=pass header.from=example.com",), False),
    ],
)
def test_only_our_own_servers_results_vouch_for_a_mailed_unsubscribe(
    results: tuple[str, ...], trusted: bool
) -> None:
    assert authenticated(_asking(*results), "victim@example.com", OURS) is trusted


def test_without_our_servers_name_no_authentication_results_are_trusted() -> None:
    forged = _asking(f"{OURS}; dmarc=pass header.from=example.com")
    assert authenticated(forged, "victim@example.com", None) is False


# -- hostile and odd cases a reviewer found; each lost a reader before ----------------------


def _verp() -> str:
    return verp_address(BOUNCE_ADDRESS, KEY, "2017-03", READER)


def _ours() -> str:
    return message_id(KEY, "2017-03", READER, "isu.example.org")


def _dsn(final: str, status: str, diagnostic: str, original: str = "") -> str:
    original_line = f"Original-Recipient: rfc822; {original}\n" if original else ""
    return (
        f"To: {_verp()}\nFrom: MAILER-DAEMON@mx.example.com\nSubject: Undelivered Mail\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n"
        f"{original_line}Final-Recipient: rfc822; {final}\nAction: failed\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n--B--\n"
    )


def _attached_bounce() -> str:
    return (
        f"From: {READER}\nTo: newsletter@isu.example.org\nSubject: Re: CCM newsletter\n"
        f"In-Reply-To: {_ours()}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="M"\n\n'
        "--M\nContent-Type: text/plain\n\nOur colleague left, see the attached bounce.\n\n"
        "--M\nContent-Type: message/rfc822\n\n"
        + _dsn("bob@old.example", "5.1.1", "550 5.1.1 User unknown").replace(_verp(), "x@y.example")
        + "\n--M--\n"
    )


HOSTILE = {
    # A person attaching a bounce to a reply that names our Message-ID in In-Reply-To.
    "attached bounce": (_attached_bounce, "left for staff"),
    "forwarded bounce": (
        lambda: (
            f"From: {READER}\nTo: newsletter@isu.example.org\nIn-Reply-To: {_ours()}\n"
            "Subject: Fwd: Undeliverable: CCM newsletter\n\n"
            "bob@colleague.example\n550 5.1.1 User unknown\n"
        ),
        "left for staff",
    ),
    # An out-of-office whose subject looks like a bounce, at the VERP address.
    "out of office": (
        lambda: (
            f"To: {_verp()}\nFrom: {READER}\nAuto-Submitted: auto-replied\n"
            "Subject: Message not delivered - I have left the Mission\n\n"
            "Please write to my successor carol@example.com, office 501: this mailbox has "
            "moved.\n"
        ),
        "automatic reply",
    ),
    # Exim's delay warning: every copy was delivered in the end.
    "exim delay warning": (
        lambda: (
            f"To: {_verp()}\nFrom: Mail Delivery System <Mailer-Daemon@mx.example.com>\n"
            "Subject: Warning: message 1csPqR-0003Ab-Cd delayed 24 hours\n\n"
            "This message was created automatically by mail delivery software.\n"
            "A message that you sent has not yet been delivered to one or more of its\n"
            f"recipients after more than 24 hours on the queue.\n\n  {READER}\n"
            "    452 4.2.2 Mailbox full\n\nNo action is required on your part.\n"
        ),
        "delivery report: nothing done",
    ),
    # One member of an alias left: the alias is not dead.
    "alias member gone": (
        lambda: _dsn("bob@example.com", "5.1.1", "550 5.1.1 User unknown", original=READER),
        "bounce (soft)",
    ),
    # The remote server refuses OUR address (sender verification), with 5.1.1.
    "sender verify": (
        lambda: _dsn(
            READER,
            "5.1.1",
            f"550-Verification failed for <{_verp()}> 550 5.1.1 User unknown 550 Sender verify "
            "failed",
        ),
        "bounce (refused)",
    ),
    # A temporary DNS failure, in words only.
    "dns try again": (
        lambda: _dsn(READER, "", "Host or domain name not found. Host not found, try again"),
        "bounce (soft)",
    ),
    # The reader's keyed unsubscribe, sent by their postmaster's forwarding robot.
    "keyed unsubscribe from postmaster": (
        lambda: (
            "From: Mail Administrator <postmaster@example.com>\n"
            f"To: {verp_address('unsubscribe@isu.example.org', KEY, '2017-03', READER)}\n"
            "Subject: Fwd: Undeliverable\n\nunsubscribe\n"
        ),
        "unsubscribe request",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_odd_and_hostile_messages_have_the_effect_a_mail_engineer_expects(
    copy: Settings, case: str
) -> None:
    build, effect = HOSTILE[case]
    report = _process(copy, [build().replace("\n", "\r\n").encode()])
    assert report.effects == [effect]
    suppressed = READER in report.suppressed.added
    assert suppressed == (effect == "unsubscribe request")


def test_the_soft_bounce_streak_follows_the_order_issues_went_out_not_their_names(
    copy: Settings,
) -> None:
    """Ids sort no-10, no-11, no-12, no-9; the issues went out no-9, no-10, no-11, no-12."""
    ledger = copy.ledger_dir / "2017-03.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    for number, (issue, soft) in enumerate(
        [("no-9", True), ("no-10", False), ("no-11", True), ("no-12", True)]
    ):
        when = f"2026-0{number + 1}-01T00:00:00.000+00:00"
        text = "".join(re.sub(r'"time": "[^"]+"', f'"time": "{when}"', line) for line in lines)
        if soft:
            text += (
                f'{{"time": "{when}", "recipient": "{READER}", "outcome": "bounce", '
                '"attempt": 0, "code": null, "reply": "soft: 4.2.2 full", "message_id": "", '
                f'"segments": [], "run": "<{issue}@mx>"}}\n'
            )
        (copy.ledger_dir / f"{issue}.jsonl").write_text(text.replace("2017-03", issue))
    ledger.unlink()
    assert bounces.soft_failures(copy.ledger_dir, {READER}, 3) == []
    assert bounces.soft_failures(copy.ledger_dir, {READER}, 2) == [READER]


@pytest.mark.parametrize(
    ("action", "status", "text", "verdict"),
    [
        ("failed", (5, 1, 1), "550 5.1.1 User unknown", Returned.HARD),
        ("failed", (5, 1, 2), "550 5.1.2 Host unknown", Returned.HARD),
        ("failed", (5, 1, 3), "553 5.1.3 Bad address syntax", Returned.HARD),
        ("failed", (5, 1, 6), "550 5.1.6 Mailbox has moved", Returned.HARD),
        ("failed", (5, 1, 10), "550 5.1.10 Recipient address has null MX", Returned.HARD),
        ("failed", (5, 4, 1), "550 5.4.1 Recipient address rejected: Access denied", Returned.HARD),
        ("failed", None, "550 Unknown user kijitora@example.jp", Returned.HARD),
        ("failed", (5, 0, 0), "550 5.0.0 No such user", Returned.HARD),
        ("failed", (4, 1, 1), "450 4.1.1 User unknown", Returned.SOFT),  # class 4: never final
        ("failed", (4, 4, 7), "Delivery time expired", Returned.SOFT),
        ("failed", (5, 2, 1), "550 5.2.1 Mailbox disabled", Returned.SOFT),
        ("failed", (5, 2, 2), "552 5.2.2 Mailbox full", Returned.SOFT),
        ("failed", (5, 4, 4), "554 5.4.4 Unable to route", Returned.SOFT),
        ("failed", None, "Host not found, try again", Returned.SOFT),
        ("failed", (5, 7, 1), "550 5.7.1 Message rejected as spam", Returned.REFUSED),
        (
            "failed",
            (5, 7, 26),
            "550 5.7.26 Unauthenticated email is not accepted",
            Returned.REFUSED,
        ),
        ("failed", (5, 1, 8), "553 5.1.8 Sender address rejected", Returned.REFUSED),
        ("failed", (5, 2, 3), "552 5.2.3 Message too large", Returned.REFUSED),
        ("failed", (5, 3, 4), "552 5.3.4 Message size exceeds limit", Returned.REFUSED),
        ("failed", (5, 6, 0), "554 5.6.0 Corrupt message content", Returned.REFUSED),
        ("failed", (5, 1, 1), "550 5.1.1 blocked using zen.spamhaus.org", Returned.REFUSED),
        ("failed", None, "550 Rejected", Returned.REFUSED),  # says nothing: never suppress
        ("delayed", (4, 2, 2), "452 4.2.2 Mailbox full", Returned.NONE),
        ("delivered", (2, 0, 0), "250 OK", Returned.NONE),
        ("relayed", (2, 0, 0), "", Returned.NONE),
        ("expanded", (2, 0, 0), "", Returned.NONE),
    ],
)
def test_each_row_of_the_returned_reply_table(
    action: str, status: tuple[int, int, int] | None, text: str, verdict: Returned
) -> None:
    assert read_returned(action, status, text) is verdict


def test_a_test_copys_mailto_unsubscribes_nobody() -> None:
    message = inbound.parse(
        b"From: editor@isu.example.org\r\nTo: unsubscribe+2017-03.test@isu.example.org\r\n"
        b"Subject: unsubscribe\r\n\r\nunsubscribe\r\n"
    )
    assert mailed_request(message, "unsubscribe@isu.example.org", lambda *_: READER, OURS) is None
