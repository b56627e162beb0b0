"""Bounces: who could not be reached, recorded in the ledger and fed to suppressions.

Each message goes out with its own envelope sender (VERP) when
``MAILER_BOUNCE_ADDRESS`` is set: ``bounces+<issue>.<tag>@domain``, where the tag
is a short hash of the recipient's address. A bounce comes back *to* that
address, so it names the issue and the recipient even when the report itself is
unreadable or names a forwarded address. Reports are read with flufl.bounce (RFC
3464 and the common non-standard formats); the issue also comes from the original
Message-ID quoted in the report when there is no VERP address.

Permanent failures are suppressed at once. A temporary failure is suppressed once
the address bounced temporarily in each of the last ``MAILER_BOUNCE_SOFT_LIMIT``
issues it was sent. Refusals at send time are classed in ``replies.py``.
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
from mailer.ledger import BOUNCE, Ledger, Record, read_records
from mailer.suppressions import Added, suppress

_MESSAGE_ID = re.compile(r"<([A-Za-z0-9][A-Za-z0-9._-]*)\.[0-9a-f]{24}@[^>\s]+>")
_ADDRESS_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "Cc")


def tag(address: str) -> str:
    """A recipient's short, stable tag for VERP addresses."""
    return hashlib.sha256(address.lower().encode("utf-8")).hexdigest()[:12]


def verp_address(bounce_address: str, issue: str, recipient: str) -> str:
    """``bounces+2017-03.1a2b3c4d5e6f@isu.example.org`` for ``recipient`` in ``issue``."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{issue}.{tag(recipient)}@{domain}"


def parse_verp(address: str, bounce_address: str) -> tuple[str, str] | None:
    """(issue, tag) when ``address`` is one of our VERP addresses."""
    local, _, domain = address.rpartition("@")
    base_local, _, base_domain = bounce_address.rpartition("@")
    if domain.lower() != base_domain.lower() or not local.startswith(base_local + "+"):
        return None
    issue, dot, recipient_tag = local[len(base_local) + 1 :].rpartition(".")
    return (issue, recipient_tag.lower()) if dot and issue else None


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
    unattributed: list[str] = field(default_factory=list)
    duplicates: int = 0
    suppressed: Added = field(default_factory=lambda: Added((), ()))


def _messages(source: Path) -> Iterator[Message]:
    if source.is_dir():
        if not (source / "cur").is_dir() and not (source / "new").is_dir():
            raise InputError("not a Maildir (no cur/ or new/ folder).", file=source)
        yield from mailbox.Maildir(str(source), factory=None, create=False)
    elif source.is_file():
        yield from mailbox.mbox(str(source))
    else:
        raise InputError("no such mbox file or Maildir folder.", file=source)


class _Recipients:
    """Per issue, the recipients of its ledger by tag (read once, on demand)."""

    def __init__(self, ledger_dir: Path) -> None:
        self.ledger_dir = ledger_dir
        self.by_issue: dict[str, dict[str, str]] = {}

    def find(self, issue: str, recipient_tag: str) -> str | None:
        if issue not in self.by_issue:
            path = self.ledger_dir / f"{issue}.jsonl"
            self.by_issue[issue] = {
                tag(r.recipient): r.recipient for r in read_records(path) if r.recipient
            }
        return self.by_issue[issue].get(recipient_tag)


def _attribute(
    message: Message, bounce_address: str | None, known: _Recipients
) -> list[Bounce] | str:
    """The bounces a report tells of, or why it cannot be attributed."""
    temporary, permanent = all_failures(message)
    failed = {a.decode("utf-8", "replace").lower(): True for a in permanent}
    failed.update({a.decode("utf-8", "replace").lower(): False for a in temporary - permanent})
    bounce_id = str(message.get("Message-ID", "")).strip() or (
        "<sha256:" + hashlib.sha256(message.as_bytes()).hexdigest()[:24] + ">"
    )
    issue = recipient = None
    if bounce_address:
        for _, address in getaddresses(
            [str(v) for h in _ADDRESS_HEADERS for v in message.get_all(h, [])]
        ):
            parsed = parse_verp(address, bounce_address)
            if parsed is not None:
                issue, found = parsed[0], known.find(*parsed)
                if found is not None:
                    recipient = found
                    break
    if issue is None:
        quoted = _MESSAGE_ID.search(message.as_string())
        issue = quoted.group(1) if quoted else None
    if issue is None:
        return "no VERP address and no quoted Message-ID of ours"
    if recipient is not None:
        # VERP names our recipient; the report (if readable) says how final it is.
        permanent_failure = any(failed.values()) or not failed
        detail = "permanent" if permanent_failure else "temporary"
        return [Bounce(issue, recipient, permanent_failure, detail, bounce_id)]
    if not failed:
        return f"issue {issue}: no failed recipient found in the report"
    return [
        Bounce(
            issue, address, is_permanent, "permanent" if is_permanent else "temporary", bounce_id
        )
        for address, is_permanent in failed.items()
    ]


def process(
    source: Path,
    ledger_dir: Path,
    recipients_dir: Path,
    *,
    bounce_address: str | None,
    soft_limit: int,
) -> BounceReport:
    """Read bounce reports; record each once in its issue's ledger; suppress the dead."""
    report = BounceReport()
    known = _Recipients(ledger_dir)
    for message in _messages(source):
        report.read += 1
        found = _attribute(message, bounce_address, known)
        if isinstance(found, str):
            report.unattributed.append(f"{message.get('Message-ID', '(no Message-ID)')}: {found}")
            continue
        report.bounces.extend(found)
    fresh = _record(report.bounces, ledger_dir)
    report.duplicates = len(report.bounces) - len(fresh)
    to_suppress = [b.recipient for b in fresh if b.permanent]
    to_suppress += soft_failures(
        ledger_dir, {b.recipient for b in fresh if not b.permanent}, soft_limit
    )
    report.suppressed = suppress(recipients_dir, dict.fromkeys(to_suppress), "bounced")
    return report


def _record(bounces: Iterable[Bounce], ledger_dir: Path) -> list[Bounce]:
    """Append each bounce to its issue's ledger unless it is already there."""
    fresh: list[Bounce] = []
    by_issue: dict[str, list[Bounce]] = {}
    for bounce in bounces:
        by_issue.setdefault(bounce.issue, []).append(bounce)
    for issue, items in by_issue.items():
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
