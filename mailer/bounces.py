"""Bounces and complaints: who could not be reached, recorded in the ledger, fed to suppressions.

``inbound.py`` says what each message is; this module acts on delivery reports
and complaints. A report counts only for the reader the issue's ledger shows
behind the message it names, found either way (``verp.py``):

- the VERP address it came back to, ``bounces+<issue>.<tag>@domain``, whose tag
  is keyed with a secret; or
- our Message-ID quoted in the report, which the ledger records per reader
  (also keyed).

So a forged report cannot suppress an address the issue never mailed, nor one
whose tag or Message-ID the forger cannot compute; and a report naming an issue
with no ledger creates none. A report is judged by the entry for our reader
(the address it lists that is the reader's; or its only entry, when the reader
forwards elsewhere), never by the worst entry it holds; a report listing
several addresses, none the reader's, is not judged.

Each entry is classed by ``replies.read_returned`` (the one reply table):
*hard* (a dead address) is suppressed at once; *soft* is recorded, and a reader
with soft bounces on ``MAILER_BOUNCE_SOFT_LIMIT`` issues in a row is suppressed
(``soft_failures``); *refused* (policy, reputation, size, content) is recorded
for staff and never suppressed; ``Action: delayed`` and the like change
nothing. An ARF ``abuse`` complaint suppresses its reader; ``not-spam`` and
``auth-failure`` never do. Suppression follows every recorded bounce, written
before or not, so a run interrupted between the ledger and the suppression list
is made good by the next.
"""

from __future__ import annotations

import hashlib
import mailbox
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

from mailer import inbound
from mailer.errors import InputError
from mailer.inbound import Kind
from mailer.ledger import BOUNCE, LedgerDir, Outcome, Record
from mailer.replies import Returned
from mailer.settings import Settings
from mailer.suppressions import Added, normalize_address, suppress, with_issue
from mailer.unsubscribe import mailed_request, requested_issue
from mailer.verp import id_key, parse_verp, tag

_MESSAGE_ID = re.compile(r"<([A-Za-z0-9][A-Za-z0-9._-]*)\.[0-9a-f]{24}@[^>\s]+>")
LEFT_FOR_STAFF = "left for staff"
_MAILED = (Outcome.ATTEMPT, Outcome.SENT, Outcome.FAILED, Outcome.DEFERRED)
# Ledger bounce records written before the reply table (``permanent``/``temporary``).
_OLD_WORDS = {"permanent": Returned.HARD, "temporary": Returned.SOFT}


@dataclass
class Bounce:
    """One failed reader of one issue, attributed and classed."""

    issue: str
    recipient: str
    verdict: Returned
    detail: str
    bounce_id: str


@dataclass
class BounceReport:
    """What reading a batch of inbound messages did; ``effects`` has one line per message."""

    read: int = 0
    bounces: list[Bounce] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)  # read, but not ours (or forged)
    skipped: list[str] = field(default_factory=list)  # could not be read at all
    ignored: list[str] = field(default_factory=list)  # not a report (auto-reply, person …)
    complaints: list[str] = field(default_factory=list)  # readers behind abuse complaints
    requests: list[str] = field(default_factory=list)  # readers behind trusted unsubscribe mail
    # The issue each request's subaddress named ("" for the bare address): kept in the
    # suppression's reason, so the health report counts it for that issue.
    request_issues: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    suppressed: Added = field(default_factory=Added)
    effects: list[str] = field(default_factory=list)


def _messages(source: Path) -> Iterator[bytes]:
    if source.is_dir():
        if not (source / "cur").is_dir() and not (source / "new").is_dir():
            raise InputError("not a Maildir (no cur/ or new/ folder).", file=source)
        box: mailbox.Mailbox[mailbox.Message] = mailbox.Maildir(str(source), create=False)
    elif source.is_file():
        box = mailbox.mbox(str(source))
    else:
        raise InputError("no such mbox file or Maildir folder.", file=source)
    for key in box.iterkeys():
        yield box.get_bytes(key)


class _Ledgers:
    """Per issue, who its ledger shows was mailed: by VERP tag and by Message-ID.

    Read once per issue, on demand; an issue without a ledger knows nobody.
    """

    def __init__(self, ledger_dir: Path, key: bytes | None) -> None:
        self.ledgers = LedgerDir(ledger_dir)
        self.key = key
        self.by_issue: dict[str, tuple[dict[str, str], dict[str, str]]] = {}

    def _load(self, issue: str) -> tuple[dict[str, str], dict[str, str]]:
        if issue not in self.by_issue:
            tags: dict[str, str] = {}
            ids: dict[str, str] = {}
            if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", issue) and self.ledgers.has(issue):
                for record in self.ledgers.records(issue, skip_damaged=True):
                    if record.recipient and record.outcome in _MAILED:
                        if self.key is not None:
                            tags[tag(self.key, issue, record.recipient)] = record.recipient
                        if record.message_id:
                            ids[record.message_id.lower()] = record.recipient
            self.by_issue[issue] = (tags, ids)
        return self.by_issue[issue]

    def by_tag(self, issue: str, recipient_tag: str) -> str | None:
        return self._load(issue)[0].get(recipient_tag)

    def by_message_id(self, issue: str, message_id: str) -> str | None:
        return self._load(issue)[1].get(message_id.lower())


def _attribute(
    message: Message, text: str, bounce_id: str, bounce_address: str | None, ledgers: _Ledgers
) -> Bounce | str:
    """The bounce a report tells of for our reader, or why it changes nothing."""
    found = _by_verp(message, bounce_address, ledgers) or _by_message_id(text, ledgers)
    if found is None:
        return "no VERP address or Message-ID of a message our ledgers show was sent"
    issue, recipient = found
    entries = inbound.failures(message)
    mine = [entry for entry in entries if entry.names(recipient)]
    if not mine and len(entries) == 1:
        mine = entries  # forwarded: the report names the address mail went on to
    entry = next((e for e in mine if e.verdict is not Returned.NONE), mine[0]) if mine else None
    if entry is not None and entry.verdict is Returned.HARD and entry.address != recipient.lower():
        # An alias or a forward died, not the reader's own address: one member left a
        # team list, or a forward broke. Soft: the limit decides if it stays so.
        entry = replace(entry, verdict=Returned.SOFT)
    if not mine:
        listed = (
            f"lists {len(entries)} addresses, none the reader's"
            if entries
            else ("names no failed recipient")
        )
        return f"issue {issue}: the report {listed}; nothing done"
    assert entry is not None
    if entry.verdict is Returned.NONE:
        return f"issue {issue}: {entry.action} (not a failure); nothing done"
    code = ".".join(map(str, entry.status)) if entry.status else ""
    detail = " ".join(f"{entry.verdict}: {code} {entry.text}".split())[:300]
    return Bounce(issue, recipient, entry.verdict, detail, bounce_id)


def _below_headers(raw: bytes) -> bytes:
    """The message without its own header block: a report quotes our Message-ID in its
    body; a person's reply names it in In-Reply-To, which proves nothing."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return raw[min(ends) :] if ends else b""


def report_id(message: Message, raw: bytes) -> str:
    """A report's identity, to record each bounce once: its Message-ID, else a hash."""
    found = str(message.get("Message-ID", "") or "").strip()[:200]
    return found or "<sha256:" + hashlib.sha256(raw).hexdigest()[:24] + ">"


def _by_verp(
    message: Message, bounce_address: str | None, ledgers: _Ledgers
) -> tuple[str, str] | None:
    if not bounce_address:
        return None
    for address in inbound.delivered_to(message):
        parsed = parse_verp(address, bounce_address)
        if parsed is not None and (recipient := ledgers.by_tag(*parsed)) is not None:
            return parsed[0], recipient
    return None


def _by_message_id(text: str, ledgers: _Ledgers) -> tuple[str, str] | None:
    for quoted in _MESSAGE_ID.finditer(text):
        recipient = ledgers.by_message_id(quoted.group(1), quoted.group(0))
        if recipient is not None:
            return quoted.group(1), recipient
    return None


def _complaint_reader(
    message: Message, text: str, bounce_address: str | None, ledgers: _Ledgers
) -> str | None:
    """The reader the ledger shows behind the message a complaint is about (its VERP
    address or quoted Message-ID), never an address the complaint merely names."""
    found = _by_verp(message, bounce_address, ledgers) or _by_message_id(text, ledgers)
    if found is None and bounce_address:
        local, _, domain = bounce_address.rpartition("@")
        pattern = re.escape(local) + r"\+[A-Za-z0-9._-]+@" + re.escape(domain)
        for address in re.findall(pattern, text, re.IGNORECASE):
            parsed = parse_verp(address, bounce_address)
            if parsed is not None and (recipient := ledgers.by_tag(*parsed)) is not None:
                return recipient
    return found[1] if found else None


def process(
    source: Path,
    ledger_dir: Path,
    recipients_dir: Path,
    *,
    bounce_address: str | None,
    soft_limit: int,
    key: bytes | None = None,
    window: timedelta | None = None,
) -> BounceReport:
    """Read an mbox or Maildir: record each report once in its issue's ledger, suppress
    the dead and complaints of abuse. ``key`` is the VERP key (``verp.id_key``)."""
    return process_messages(
        _messages(source),
        ledger_dir,
        recipients_dir,
        bounce_address=bounce_address,
        soft_limit=soft_limit,
        key=key,
        window=window,
    )


def process_source(
    source: Path, settings: Settings, recipients_dir: Path | None = None
) -> BounceReport:
    """``mailer bounces``: :func:`process` with the settings' ledgers, lists and VERP key."""
    return process(
        source,
        settings.ledger_dir,
        recipients_dir or settings.recipients_dir,
        bounce_address=settings.bounce_address,
        soft_limit=settings.bounce_soft_limit,
        key=id_key(settings),
        window=settings.dispatch_window,
    )


def process_messages(
    messages: Iterable[bytes],
    ledger_dir: Path,
    recipients_dir: Path,
    *,
    bounce_address: str | None,
    soft_limit: int,
    key: bytes | None = None,
    window: timedelta | None = None,
    unsubscribe_address: str | None = None,
    authserv_id: str | None = None,
    now: datetime | None = None,
) -> BounceReport:
    """``process`` for raw messages from anywhere (a file, a mailbox over IMAP).

    With ``unsubscribe_address``, mail to it (or to a reader's subaddress of it)
    is an unsubscribe request, trusted as ``unsubscribe.mailed_request`` says.
    ``report.effects`` says, per message in order, what it was and what it did;
    ``LEFT_FOR_STAFF`` marks the ones a person should read.
    """
    report = BounceReport()
    ledgers = _Ledgers(ledger_dir, key)

    def trust(message: Message) -> str | None:
        assert unsubscribe_address
        return mailed_request(message, unsubscribe_address, ledgers.by_tag, authserv_id)

    for raw in messages:
        report.read += 1
        report.effects.append(
            _one(raw, report, ledgers, bounce_address, unsubscribe_address, trust)
        )
    report.bounces += windows_ended(ledger_dir, window, now)
    fresh = _record(report.bounces, ledger_dir)
    report.duplicates = len(report.bounces) - len(fresh)
    hard = [b.recipient for b in report.bounces if b.verdict is Returned.HARD]
    soft = soft_failures(
        ledger_dir, {b.recipient for b in fresh if b.verdict is Returned.SOFT}, soft_limit
    )
    added = suppress(recipients_dir, dict.fromkeys(hard), "bounced (no such address)")
    added_soft = suppress(recipients_dir, dict.fromkeys(soft), "soft-bounces")
    added_abuse = suppress(recipients_dir, dict.fromkeys(report.complaints), "complaint (abuse)")
    by_issue: dict[str, list[str]] = {}
    for reader in dict.fromkeys(report.requests):
        by_issue.setdefault(report.request_issues.get(reader, ""), []).append(reader)
    mailed = [
        suppress(recipients_dir, readers, with_issue("unsubscribe request by mail", issue))
        for issue, readers in by_issue.items()
    ]
    parts = (added, added_soft, added_abuse, *mailed)
    report.suppressed = Added(
        tuple(a for part in parts for a in part.added),
        tuple(a for part in parts for a in part.already),
        tuple(a for part in parts for a in part.refused),
    )
    return report


def _one(
    raw: bytes,
    report: BounceReport,
    ledgers: _Ledgers,
    bounce_address: str | None,
    unsubscribe_address: str | None,
    trust: Callable[[Message], str | None],
) -> str:
    """Read one message and note what it is; returns its effect in a few words."""
    try:
        message = inbound.parse(raw)
        label = _label(message, report.read)
        kind = inbound.classify(message, unsubscribe_address=unsubscribe_address)
    except Exception as exc:  # not even a message: skipped, never the batch
        report.skipped.append(f"message {report.read}: cannot be read ({type(exc).__name__})")
        return str(Kind.UNREADABLE)
    if kind is Kind.UNREADABLE:
        report.skipped.append(f"{label}: cannot be read")
        return str(kind)
    text = _below_headers(raw).decode("latin-1")
    if kind is Kind.COMPLAINT:
        return _complaint(message, text, label, report, ledgers, bounce_address)
    if kind is Kind.UNSUBSCRIBE:
        reader = trust(message)
        if reader is None:
            report.ignored.append(f"{label}: an unsubscribe mail without proof; left for staff")
            return LEFT_FOR_STAFF
        report.requests.append(reader)
        if unsubscribe_address:
            report.request_issues[reader] = requested_issue(message, unsubscribe_address)
        return "unsubscribe request"
    if kind is Kind.PERSONAL:
        report.ignored.append(f"{label}: a person's reply; left for staff")
        return LEFT_FOR_STAFF
    if kind is not Kind.REPORT:
        report.ignored.append(f"{label}: {kind}, nothing done")
        return str(kind)
    try:
        found = _attribute(message, text, report_id(message, raw), bounce_address, ledgers)
    except Exception as exc:  # a mangled report is skipped, never the batch
        report.skipped.append(f"{label}: cannot be read ({type(exc).__name__}: {exc})"[:300])
        return str(Kind.UNREADABLE)
    if isinstance(found, str):
        report.unattributed.append(f"{label}: {found}")
        return "delivery report: nothing done"
    try:
        found.recipient = normalize_address(found.recipient)
    except ValueError as exc:
        report.skipped.append(f"{label}: unusable address {found.recipient!r} ({exc})")
        return "delivery report: nothing done"
    report.bounces.append(found)
    return f"bounce ({found.verdict})"


def _complaint(
    message: Message,
    text: str,
    label: str,
    report: BounceReport,
    ledgers: _Ledgers,
    bounce_address: str | None,
) -> str:
    """An ARF complaint: ``abuse``, ``fraud`` and ``virus`` suppress their reader;
    ``opt-out`` is an unsubscribe; ``not-spam`` and ``auth-failure`` never do."""
    kind = inbound.feedback_type(message)
    if kind not in ("abuse", "fraud", "virus", "opt-out"):
        return f"complaint ({kind}): nothing done"
    reader = _complaint_reader(message, text, bounce_address, ledgers)
    if reader is None:
        report.unattributed.append(f"{label}: a complaint that names no message of ours")
        return "complaint not attributed"
    report.complaints.append(reader)
    return f"complaint ({kind}): suppressed"


def _label(message: Message, number: int) -> str:
    """How a report is named in messages: its Message-ID, else its place in the batch."""
    try:
        found = str(message.get("Message-ID", "") or "").strip()
    except Exception:  # a header that cannot even be decoded
        found = ""
    return found[:120] or f"message {number}"


def _record(bounces: Iterable[Bounce], ledger_dir: Path) -> list[Bounce]:
    """Append each bounce to its issue's (existing) ledger unless it is already there.

    A bounce of an issue being sent is written beside the send: the ledger's
    appends take an exclusive lock per write, so the two never tear a line.
    """
    fresh: list[Bounce] = []
    by_issue: dict[str, list[Bounce]] = {}
    ledgers = LedgerDir(ledger_dir)
    for bounce in bounces:
        by_issue.setdefault(bounce.issue, []).append(bounce)
    for issue, items in by_issue.items():
        if not ledgers.has(issue):
            continue  # attribution needs the ledger; never create one here
        seen = {
            (r.recipient.lower(), r.report_id) for r in ledgers.records(issue, skip_damaged=True)
        }
        records = []
        for bounce in items:
            key = (bounce.recipient.lower(), bounce.bounce_id)
            if key in seen:
                continue
            seen.add(key)
            fresh.append(bounce)
            records.append(Record.bounce(bounce.recipient, bounce.detail, bounce.bounce_id))
        if records:
            ledgers.append_beside(issue, records)
    return fresh


WINDOW_ENDED = "<dispatch-window-ended>"  # the ``run`` of a deferral counted as a soft bounce


def windows_ended(
    ledger_dir: Path, window: timedelta | None, now: datetime | None = None
) -> list[Bounce]:
    """Soft bounces for readers still deferred when their issue's dispatch window ended.

    A deferred reader is retried on later runs while the window lasts; after it,
    the deferral is counted once as a soft bounce (``_record`` keeps it once).
    The window runs from the issue's first ledger record.
    """
    if window is None:
        return []
    moment = now or datetime.now(UTC)
    found = []
    ledgers = LedgerDir(ledger_dir)
    for issue in ledgers.issues():
        records = list(ledgers.records(issue, skip_damaged=True))
        if not records or not _ended(records[0].time, window, moment):
            continue
        last: dict[str, str] = {}
        counted: set[str] = set()
        for record in records:
            address = record.recipient.lower()
            if record.outcome == BOUNCE and record.run == WINDOW_ENDED:
                counted.add(address)
            elif address and record.outcome in (*_MAILED, Outcome.HELD):
                last[address] = record.outcome
        for address, outcome in last.items():
            if outcome == Outcome.DEFERRED and address not in counted:
                detail = "soft: still deferred when the dispatch window ended"
                found.append(Bounce(issue, address, Returned.SOFT, detail, WINDOW_ENDED))
    return found


def returned(record: Record) -> Returned:
    """The class of a ``bounce`` ledger record (older records said permanent/temporary)."""
    word = (record.reply or "").partition(":")[0].strip()
    if word in _OLD_WORDS:
        return _OLD_WORDS[word]
    try:
        return Returned(word)
    except ValueError:
        return Returned.REFUSED


def soft_failures(ledger_dir: Path, addresses: set[str] | None, limit: int) -> list[str]:
    """Readers with soft bounces on the last ``limit`` issues mailed to them (0: never).

    An issue counts as a soft bounce for a reader when its ledger holds a soft
    ``bounce`` record (a report, or a deferral counted by ``windows_ended``); a
    delivery in between resets the count. ``addresses`` None looks at everyone.
    """
    if limit <= 0 or (addresses is not None and not addresses):
        return []
    wanted = None if addresses is None else {a.lower() for a in addresses}
    history: dict[str, list[bool]] = {}
    ledgers = LedgerDir(ledger_dir)
    standings = [
        _standing(ledgers.records(issue, skip_damaged=True), wanted) for issue in ledgers.issues()
    ]
    issues = sorted(standings, key=lambda issue: issue[0])
    for _, standing in issues:  # in the order the issues went out, whatever their ids
        for address, soft in standing.items():
            history.setdefault(address, []).append(soft)
    return [
        address
        for address, issues in history.items()
        if len(issues) >= limit and all(issues[-limit:])
    ]


def _standing(records: Iterable[Record], wanted: set[str] | None) -> tuple[str, dict[str, bool]]:
    """When one issue went out (its first record), and per reader mailed in it: True
    when it was a soft bounce, False when delivered."""
    last: dict[str, str] = {}
    bounced: dict[str, Returned] = {}
    late: set[str] = set()
    first = ""
    for record in records:
        first = first or record.time
        address = record.recipient.lower()
        if not address or (wanted is not None and address not in wanted):
            continue
        if record.outcome == BOUNCE:
            verdict = returned(record)
            if verdict is Returned.SOFT or address not in bounced:
                bounced[address] = verdict
            if record.run == WINDOW_ENDED:
                late.add(address)  # a deferral: a later delivery in the issue undoes it
        elif record.outcome in _MAILED or record.outcome == Outcome.HELD:
            last[address] = record.outcome
    standing: dict[str, bool] = {}
    for address, outcome in last.items():
        said = bounced.get(address)
        if said is Returned.SOFT and (address not in late or outcome != Outcome.SENT):
            standing[address] = True
        elif outcome == Outcome.SENT and said is None:
            standing[address] = False
    return first, standing


def _ended(first: str, window: timedelta, moment: datetime) -> bool:
    try:
        started = datetime.fromisoformat(first)
    except ValueError:
        return False
    return moment - started > window
