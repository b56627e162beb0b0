"""The suppression list, ``recipients/suppressions.csv``: its one reader and writer.

Every path that stops mail to an address ends here: a one-click or mailed
unsubscribe, a bounce, a refusal at send time. The address normalizer lives
here too, and recipients, unsubscribe, bounces and sync all use it, so an
address written to the file is always one that loading the file accepts.

Appends take an exclusive lock on the file and re-read it under the lock, so two
processes adding at once (a send and a sync) neither lose nor duplicate a row.
"""

from __future__ import annotations

import csv
import fcntl
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from email_validator import EmailNotValidError, validate_email

from mailer.errors import RecipientError
from mailer.spreadsheet import read_sheet

SUPPRESSIONS = "suppressions.csv"

# The everyday address (dot-atom local part, LDH host names, a letters-only top
# level domain) is normalized here, as email-validator would (the domain lower
# case, nothing else changed): 100,000 rows load in a second instead of several.
# Anything else, and every refusal, is email-validator's call.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:{_LABEL}\.)+(?P<tld>[A-Za-z]{{2,63}}))"
)
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_ok(match: re.Match[str]) -> bool:
    """Whether the fast path may decide: lengths, reserved names and IDNA labels aside."""
    domain = match["domain"].lower()
    return (
        len(match["local"]) <= 64
        and len(match.string) <= 254
        and match["tld"].lower() not in _SPECIAL_USE
        and not any(label[2:4] == "--" for label in domain.split("."))
    )


def normalize_address(address: str) -> str:
    """The address as mailer stores and compares it; ValueError says why it is unusable.

    Internationalized (non-ASCII) addresses are refused: mailer never mails them
    (many relays cannot), so there is nothing to record for them either.
    """
    address = address.strip()
    if not address:
        raise ValueError("the address is empty")
    if (plain := _PLAIN.fullmatch(address)) is not None and _plain_ok(plain):
        return f"{plain['local']}@{plain['domain'].lower()}"
    try:
        return validate_email(address, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc).rstrip(".")) from None


def load(directory: Path) -> frozenset[str]:
    """Lower-cased addresses never to mail; the file is optional."""
    return frozenset(_read(directory / SUPPRESSIONS)[0])


def _read(path: Path) -> tuple[set[str], str]:
    """The file's addresses (lower case) and its delimiter; an empty or missing file is none."""
    if not path.exists() or path.stat().st_size == 0:
        return set(), ","
    sheet = read_sheet(path)
    suppressed = set()
    for line, row in sheet.rows():
        try:
            suppressed.add(normalize_address(row.get("email", "")).lower())
        except ValueError as exc:
            raise RecipientError(f"{exc}.", file=path, line=line, field="email") from None
    return suppressed, sheet.delimiter


@dataclass(frozen=True)
class Entry:
    """One row of the file: whom, why, and the day it was written (None when unknown)."""

    address: str  # lower case
    reason: str  # without the issue (see with_issue)
    day: str | None  # YYYY-MM-DD
    issue: str | None = None  # the issue the request named, when it named one


_ISSUE_IN_REASON = re.compile(r"\s*\(issue ([A-Za-z0-9][A-Za-z0-9._-]*)\)$")


def with_issue(reason: str, issue: str) -> str:
    """``one-click unsubscribe (issue 2017-03)``: the issue a request named, kept in the
    reason (the file's three columns stay as they are, for every reader and git merge)."""
    return f"{reason} (issue {issue})" if issue else reason


def reason_and_issue(reason: str) -> tuple[str, str | None]:
    """A row's reason without its issue, and the issue when it names one."""
    match = _ISSUE_IN_REASON.search(reason)
    return (reason[: match.start()], match[1]) if match else (reason, None)


def entries(directory: Path) -> list[Entry]:
    """Every row, in file order (the report counts them; nothing here is mailed)."""
    path = directory / SUPPRESSIONS
    if not path.exists() or path.stat().st_size == 0:
        return []
    found = []
    for _, row in read_sheet(path).rows():
        try:
            address = normalize_address(row.get("email", "")).lower()
        except ValueError:
            continue  # the loader reports it when a list is loaded
        day = (row.get("date") or "").strip()[:10] or None
        reason, issue = reason_and_issue((row.get("reason") or "").strip())
        found.append(Entry(address, reason, day, issue))
    return found


@dataclass(frozen=True)
class Added:
    """What a suppression update did; ``refused`` pairs an unusable address with why."""

    added: tuple[str, ...] = ()
    already: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()


def suppress(directory: Path, addresses: Iterable[str], reason: str) -> Added:
    """Append ``addresses`` unless already there (case-insensitive); skip unusable ones.

    An unusable address is reported in ``refused`` and never stops the others:
    one bad sender in a batch of requests must not keep the rest subscribed.
    """
    wanted: list[str] = []
    refused: list[tuple[str, str]] = []
    for address in addresses:
        try:
            wanted.append(normalize_address(address))
        except ValueError as exc:
            refused.append((address[:100], str(exc)))
    if not wanted:
        return Added(refused=tuple(refused))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SUPPRESSIONS
    with path.open("a", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        known, delimiter = _read(path)
        added, already = [], []
        for address in wanted:
            if address.lower() in known:
                already.append(address)
            else:
                known.add(address.lower())
                added.append(address)
        if added:
            _append(handle, path, added, reason, delimiter)
    return Added(tuple(added), tuple(already), tuple(refused))


def _append(handle: TextIO, path: Path, addresses: list[str], reason: str, delimiter: str) -> None:
    """Write rows for ``addresses`` at the end of the locked file (a header if it is new)."""
    data = path.read_bytes()
    writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
    if not data.strip():
        writer.writerow(["email", "reason", "date"])
    elif not data.endswith(b"\n"):
        handle.write("\n")
    today = datetime.now(UTC).date().isoformat()
    clean_reason = " ".join(reason.split())[:200]
    writer.writerows([a, clean_reason, today] for a in addresses)
    handle.flush()
    # Durable before the caller acts on it: sync then acknowledges the rows (and the
    # endpoint may forget them), IMAP moves the message: a lost row is a lost request.
    os.fsync(handle.fileno())
