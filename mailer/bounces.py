"""Bounces: who could not be reached, recorded in the ledger and fed to suppressions.

A bounce counts only for the recipient the issue's ledger shows behind the
message it names, found either way (``verp.py``):

- the VERP address it came back to, ``bounces+<issue>.<tag>@domain``, whose tag
  is keyed with a secret; or
- our Message-ID quoted in the report, which the ledger records per recipient
  (also keyed).

So a forged report cannot suppress an address the issue never mailed, nor one
whose tag or Message-ID the forger cannot compute; and a report naming an issue
with no ledger creates none. The addresses the report lists are used only to
tell how final the failure is (flufl.bounce reads RFC 3464 and the common
non-standard formats), never to choose whom to suppress.

Permanent failures are suppressed; a temporary failure is suppressed once the
address bounced temporarily in each of the last ``MAILER_BOUNCE_SOFT_LIMIT``
issues it was sent. A message that cannot be read (an unknown charset, broken
MIME) or names an unusable address is skipped and reported; the rest of the
batch is read. Suppression follows every attributed bounce, recorded before or
not, so a run interrupted between the ledger and the suppression list is made
good by the next. Refusals at send time are classed in ``replies.py``.
"""

from __future__ import annotations

import hashlib
import mailbox
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses
from pathlib import Path

from flufl.bounce import all_failures

from mailer.errors import InputError
from mailer.ledger import BOUNCE, Ledger, Outcome, Record, ledger_path, read_records
from mailer.suppressions import Added, normalize_address, suppress
from mailer.verp import parse_verp, tag

_MESSAGE_ID = re.compile(r"<([A-Za-z0-9][A-Za-z0-9._-]*)\.[0-9a-f]{24}@[^>\s]+>")
_ADDRESS_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "Cc")
_MAILED = (Outcome.ATTEMPT, Outcome.SENT, Outcome.FAILED, Outcome.DEFERRED)


@dataclass
class Bounce:
    """One bounce, attributed."""

    issue: str
    recipient: str
    permanent: bool
    detail: str
    bounce_id: str


@dataclass
class BounceReport:
    """What ``mailer bounces`` did."""

    read: int = 0
    bounces: list[Bounce] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)  # read, but not ours (or forged)
    skipped: list[str] = field(default_factory=list)  # could not be read at all
    duplicates: int = 0
    suppressed: Added = field(default_factory=Added)


def _messages(source: Path) -> Iterator[Message]:
    if source.is_dir():
        if not (source / "cur").is_dir() and not (source / "new").is_dir():
            raise InputError("not a Maildir (no cur/ or new/ folder).", file=source)
        yield from mailbox.Maildir(str(source), factory=None, create=False)
    elif source.is_file():
        yield from mailbox.mbox(str(source))
    else:
        raise InputError("no such mbox file or Maildir folder.", file=source)


class _Ledgers:
    """Per issue, who its ledger shows was mailed: by VERP tag and by Message-ID.

    Read once per issue, on demand; an issue without a ledger knows nobody.
    """

    def __init__(self, ledger_dir: Path, key: bytes | None) -> None:
        self.ledger_dir = ledger_dir
        self.key = key
        self.by_issue: dict[str, tuple[dict[str, str], dict[str, str]]] = {}

    def _load(self, issue: str) -> tuple[dict[str, str], dict[str, str]]:
        if issue not in self.by_issue:
            path = ledger_path(self.ledger_dir, issue)
            tags: dict[str, str] = {}
            ids: dict[str, str] = {}
            if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", issue) and path.is_file():
                for record in read_records(path):
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
    message: Message, bounce_address: str | None, ledgers: _Ledgers
) -> list[Bounce] | str:
    """The bounce a report tells of, or why it cannot be attributed."""
    temporary, permanent = all_failures(message)
    failed = {a.decode("utf-8", "replace").lower(): True for a in permanent}
    failed.update({a.decode("utf-8", "replace").lower(): False for a in temporary - permanent})
    bounce_id = report_id(message)
    found = _by_verp(message, bounce_address, ledgers) or _by_message_id(message, ledgers)
    if found is None:
        return "no VERP address or Message-ID of a message our ledgers show was sent"
    issue, recipient, by_verp = found
    if by_verp:
        # VERP names our recipient; the report (if readable) says how final it is.
        is_permanent = any(failed.values()) or not failed
    elif recipient.lower() in failed:
        is_permanent = failed[recipient.lower()]
    elif failed:
        is_permanent = any(failed.values())  # forwarded: the report names the final address
    else:
        return f"issue {issue}: no failed recipient found in the report"
    detail = "permanent" if is_permanent else "temporary"
    return [Bounce(issue, recipient, is_permanent, detail, bounce_id)]


def report_id(message: Message) -> str:
    """A report's identity, to record each bounce once: its Message-ID, else a hash."""
    return str(message.get("Message-ID", "")).strip()[:200] or (
        "<sha256:" + hashlib.sha256(message.as_bytes()).hexdigest()[:24] + ">"
    )


def _by_verp(
    message: Message, bounce_address: str | None, ledgers: _Ledgers
) -> tuple[str, str, bool] | None:
    if not bounce_address:
        return None
    values = [str(v) for h in _ADDRESS_HEADERS for v in message.get_all(h, [])]
    for _, address in getaddresses(values):
        parsed = parse_verp(address, bounce_address)
        if parsed is not None and (recipient := ledgers.by_tag(*parsed)) is not None:
            return parsed[0], recipient, True
    return None


def _by_message_id(message: Message, ledgers: _Ledgers) -> tuple[str, str, bool] | None:
    for quoted in _MESSAGE_ID.finditer(message.as_string()):
        recipient = ledgers.by_message_id(quoted.group(1), quoted.group(0))
        if recipient is not None:
            return quoted.group(1), recipient, False
    return None


def recipient_behind(
    message: Message, bounce_address: str | None, ledger_dir: Path, key: bytes | None
) -> str | None:
    """The reader the ledger shows behind the message a report is about (a complaint's
    VERP address or quoted Message-ID), never an address the report merely names."""
    ledgers = _Ledgers(ledger_dir, key)
    found = _by_verp(message, bounce_address, ledgers) or _by_message_id(message, ledgers)
    if found is None and bounce_address:
        local, _, domain = bounce_address.rpartition("@")
        pattern = re.escape(local) + r"\+[A-Za-z0-9._-]+@" + re.escape(domain)
        for address in re.findall(pattern, message.as_string(), re.IGNORECASE):
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
) -> BounceReport:
    """Read bounce reports; record each once in its issue's ledger; suppress the dead.

    ``key`` is the VERP key (``verp.id_key``); without it only Message-IDs attribute.
    """
    return process_messages(
        _messages(source),
        ledger_dir,
        recipients_dir,
        bounce_address=bounce_address,
        soft_limit=soft_limit,
        key=key,
    )


def process_messages(
    messages: Iterable[Message],
    ledger_dir: Path,
    recipients_dir: Path,
    *,
    bounce_address: str | None,
    soft_limit: int,
    key: bytes | None = None,
) -> BounceReport:
    """``process`` for messages from anywhere (a file, a mailbox over IMAP)."""
    report = BounceReport()
    ledgers = _Ledgers(ledger_dir, key)
    for message in messages:
        report.read += 1
        label = _label(message, report.read)
        try:
            found = _attribute(message, bounce_address, ledgers)
        except Exception as exc:  # a mangled report is skipped, never the batch
            report.skipped.append(f"{label}: cannot be read ({type(exc).__name__}: {exc})"[:300])
            continue
        if isinstance(found, str):
            report.unattributed.append(f"{label}: {found}")
            continue
        for bounce in found:
            try:
                bounce.recipient = normalize_address(bounce.recipient)
            except ValueError as exc:
                report.skipped.append(f"{label}: unusable address {bounce.recipient!r} ({exc})")
                continue
            report.bounces.append(bounce)
    fresh = _record(report.bounces, ledger_dir)
    report.duplicates = len(report.bounces) - len(fresh)
    to_suppress = [b.recipient for b in report.bounces if b.permanent]
    to_suppress += soft_failures(
        ledger_dir, {b.recipient for b in fresh if not b.permanent}, soft_limit
    )
    report.suppressed = suppress(recipients_dir, dict.fromkeys(to_suppress), "bounced")
    return report


def _label(message: Message, number: int) -> str:
    """How a report is named in messages: its Message-ID, else its place in the batch."""
    try:
        found = str(message.get("Message-ID", "") or "").strip()
    except Exception:  # a header that cannot even be decoded
        found = ""
    return found[:120] or f"message {number}"


def _record(bounces: Iterable[Bounce], ledger_dir: Path) -> list[Bounce]:
    """Append each bounce to its issue's (existing) ledger unless it is already there."""
    fresh: list[Bounce] = []
    by_issue: dict[str, list[Bounce]] = {}
    for bounce in bounces:
        by_issue.setdefault(bounce.issue, []).append(bounce)
    for issue, items in by_issue.items():
        if not ledger_path(ledger_dir, issue).is_file():
            continue  # attribution needs the ledger; never create one here
        with Ledger(ledger_dir, issue) as ledger:
            seen = {
                (r.recipient.lower(), r.run)
                for r in read_records(ledger.path)
                if r.outcome == BOUNCE
            }
            records = []
            for bounce in items:
                key = (bounce.recipient.lower(), bounce.bounce_id)
                if key in seen:
                    continue
                seen.add(key)
                fresh.append(bounce)
                records.append(
                    Record(
                        recipient=bounce.recipient,
                        outcome=BOUNCE,
                        message_id="",
                        segments=(),
                        attempt=0,
                        reply=bounce.detail,
                        run=bounce.bounce_id,
                    )
                )
            ledger.write_now(records)
    return fresh


def soft_failures(ledger_dir: Path, addresses: set[str], limit: int) -> list[str]:
    """Addresses that bounced temporarily in each of the last ``limit`` issues sent to them."""
    if not addresses:
        return []
    history: dict[str, list[tuple[str, bool]]] = {a.lower(): [] for a in addresses}
    for path in sorted(ledger_dir.glob("*.jsonl")):
        sent: set[str] = set()
        soft: set[str] = set()
        for record in read_records(path):
            address = record.recipient.lower()
            if address in history:
                if record.outcome == "sent":
                    sent.add(address)
                elif record.outcome == BOUNCE and record.reply == "temporary":
                    soft.add(address)
        for address in sent:
            history[address].append((path.stem, address in soft))
    return [
        address
        for address, issues in history.items()
        if len(issues) >= limit and all(bounced for _, bounced in issues[-limit:])
    ]
