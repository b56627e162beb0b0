"""The inbound mailbox, read over IMAP by ``mailer sync``: bounces, unsubscribe mail, complaints.

Each message in ``MAILER_IMAP_FOLDER`` is classed, its effect written (ledger,
``suppressions.csv``), and only then moved to ``MAILER_IMAP_DONE_FOLDER``: a
crash never loses a bounce or an unsubscribe, and since every effect is
idempotent, a message processed twice (a crash between writing and moving)
changes nothing the second time. The move is UID MOVE (RFC 6851) where the
server offers it, else UID COPY, UID STORE ``\\Deleted`` and UID EXPUNGE (RFC
4315), never a plain EXPUNGE that would take other clients' deletions along.

- An ARF complaint (RFC 5965) of type ``abuse`` suppresses the reader at once;
  ``not-spam`` (RFC 6650) and ``auth-failure`` (RFC 6591) never do. The reader
  is found by the VERP address or our keyed Message-ID quoted in the report
  (``Original-Rcpt-To`` is often redacted), never by an address it names.
- An out-of-office or other automatic reply changes nothing (moved aside).
- A message to the unsubscribe address asking to unsubscribe is the request of
  the address it came from, as RFC 2369 intends: this trusts the From header
  (the relay's SPF/DKIM/DMARC checks are the guard against forged senders).
- Anything else with failures in it is a bounce (the bounce reader decides).
- A message that cannot be decoded is moved aside and reported; a human reply
  that is none of these stays in the folder for staff.
"""

from __future__ import annotations

import contextlib
import email
import imaplib
import re
import ssl
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from pathlib import Path

from mailer import bounces, suppressions
from mailer.errors import ConfigError
from mailer.settings import Settings
from mailer.unsubscribe import requests_in_message
from mailer.verp import id_key

_AUTO_SUBJECT = re.compile(
    r"^(out of (the )?office|automatic reply|auto(matic)?[- ]?reply|absence|"
    r"réponse automatique|respuesta automática)",
    re.IGNORECASE,
)


@dataclass
class InboxResult:
    """What reading the mailbox did, by effect."""

    name: str = "mailbox"
    effects: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    already: int = 0
    refused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def count(self, effect: str) -> None:
        self.effects[effect] = self.effects.get(effect, 0) + 1


def read_mailbox(settings: Settings, recipients_dir: Path) -> InboxResult:
    """Process every message of the folder; move each once its effect is on disk."""
    result = InboxResult()
    try:
        connection = _connect(settings)
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        detail = str(exc)[:300] if "OAuth2" in str(exc) else type(exc).__name__
        result.error = (
            f"the mailbox {settings.imap_host} could not be read ({detail}); check "
            "MAILER_IMAP_HOST, _PORT, _SECURITY, _USERNAME and _PASSWORD (or, with "
            "MAILER_IMAP_AUTH=xoauth2, the MAILER_OAUTH_* settings)."
        )
        return result
    try:
        _process_folder(connection, settings, recipients_dir, result)
    except (OSError, imaplib.IMAP4.error) as exc:
        result.error = f"reading the mailbox stopped ({type(exc).__name__}: {str(exc)[:120]})"
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            connection.logout()
    return result


def _connect(settings: Settings) -> imaplib.IMAP4:
    s = settings
    if not s.imap_host or not s.imap_username:
        raise ConfigError("reading the mailbox needs these settings.", field="MAILER_IMAP_HOST")
    if s.imap_auth == "password" and s.imap_password is None:
        raise ConfigError("reading the mailbox needs its password.", field="MAILER_IMAP_PASSWORD")
    port = s.imap_port or (993 if s.imap_security == "tls" else 143)
    context = ssl.create_default_context()
    connection: imaplib.IMAP4
    if s.imap_security == "tls":
        connection = imaplib.IMAP4_SSL(s.imap_host, port, ssl_context=context, timeout=30)
    else:
        connection = imaplib.IMAP4(s.imap_host, port, timeout=30)
        if s.imap_security == "starttls":
            connection.starttls(context)
    if s.imap_auth == "xoauth2":
        _sign_in_by_token(connection, s)
    else:
        assert s.imap_password is not None
        connection.login(s.imap_username, s.imap_password.get_secret_value())
    return connection


def _sign_in_by_token(connection: imaplib.IMAP4, settings: Settings) -> None:
    """AUTHENTICATE XOAUTH2 with a client-credentials token (the same MAILER_OAUTH_*
    settings as SMTP; Microsoft 365 needs the application's IMAP.AccessAsApp)."""
    import asyncio

    from mailer.oauth import TokenSource, TokenUnavailable

    assert settings.imap_username
    try:
        token = asyncio.run(TokenSource(settings).token())
    except TokenUnavailable as exc:
        raise imaplib.IMAP4.error(f"no OAuth2 token: {exc}") from None
    answer = f"user={settings.imap_username}\x01auth=Bearer {token.value}\x01\x01".encode()
    connection.authenticate("XOAUTH2", lambda _: answer)


BATCH = 500  # messages fetched, written and moved together


def _process_folder(
    connection: imaplib.IMAP4, settings: Settings, recipients_dir: Path, result: InboxResult
) -> None:
    folder, done = settings.imap_folder, settings.imap_done_folder
    connection.create(_quoted(done))  # "already exists" is fine
    kind, _ = connection.select(_quoted(folder))
    if kind != "OK":
        raise imaplib.IMAP4.error(f"no folder {folder}")
    kind, data = connection.uid("SEARCH", "ALL")
    uids = [u.decode() for u in data[0].split()] if kind == "OK" and data and data[0] else []
    can_move = "MOVE" in connection.capabilities
    validity = _uid_validity(connection, folder)
    for start in range(0, len(uids), BATCH):
        batch = _fetch(connection, uids[start : start + BATCH])
        handled = _apply(batch, settings, recipients_dir, result)  # effects on disk first
        if handled:
            # UIDs name the same messages only while UIDVALIDITY holds (RFC 3501 2.3.1.1):
            # a folder recreated meanwhile must not have other messages moved.
            if _uid_validity(connection, folder) != validity:
                raise imaplib.IMAP4.error("the folder's UIDVALIDITY changed; run sync again")
            _move(connection, handled, done, can_move)


def _uid_validity(connection: imaplib.IMAP4, folder: str) -> str:
    kind, data = connection.status(_quoted(folder), "(UIDVALIDITY)")
    found = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"") if kind == "OK" and data else None
    return found.group(1).decode() if found else ""


def _fetch(connection: imaplib.IMAP4, uids: list[str]) -> list[tuple[str, bytes]]:
    """(UID, message bytes) of ``uids``, in one UID FETCH."""
    kind, parts = connection.uid("FETCH", ",".join(uids), "(UID BODY.PEEK[])")
    fetched = []
    for part in parts if kind == "OK" else []:
        if isinstance(part, tuple):
            found = re.search(rb"UID (\d+)", part[0])
            if found:
                fetched.append((found.group(1).decode(), part[1]))
    return fetched


def _apply(
    batch: list[tuple[str, bytes]], settings: Settings, recipients_dir: Path, result: InboxResult
) -> list[str]:
    """Write the effects of a batch; returns the UIDs to move (all but staff's mail)."""
    handled: list[str] = []
    requests: list[str] = []
    complaints: list[str] = []
    maybe_bounces: dict[str, tuple[str, Message, str]] = {}  # report id -> (uid, msg, kind)
    for uid, raw in batch:
        try:
            message = email.message_from_bytes(raw)
            kind = _kind(message, settings)
        except Exception as exc:  # an undecodable message is moved aside, never a stop
            result.problems.append(f"UID {uid}: cannot be read ({type(exc).__name__})")
            effect = "unreadable"
        else:
            if kind == "auto-reply":
                effect = "auto-reply"
            elif kind == "complaint":
                effect = _complaint(message, settings, complaints, result)
            elif kind == "unsubscribe":
                requests += requests_in_message(message)
                effect = "unsubscribe request"
            else:
                maybe_bounces[f"{bounces.report_id(message)}#{uid}"] = (uid, message, kind)
                continue
        result.count(effect)
        handled.append(uid)
    _tally(result, suppressions.suppress(recipients_dir, requests, "unsubscribe request by mail"))
    _tally(result, suppressions.suppress(recipients_dir, complaints, "complaint (abuse)"))
    if maybe_bounces:
        report = bounces.process_messages(
            [message for _, message, _ in maybe_bounces.values()],
            settings.ledger_dir,
            recipients_dir,
            bounce_address=settings.bounce_address,
            soft_limit=settings.bounce_soft_limit,
            key=id_key(settings),
        )
        _tally(result, report.suppressed)
        result.problems += report.skipped
        attributed = {bounce.bounce_id for bounce in report.bounces}
        for uid, message, kind in maybe_bounces.values():
            if bounces.report_id(message) in attributed:
                effect = "bounce"
            elif kind == "bounce":
                effect = "bounce not attributed"
            else:
                result.count("left for staff")
                continue
            result.count(effect)
            handled.append(uid)
    return handled


def _kind(message: Message, settings: Settings) -> str:
    content_type = message.get_content_type()
    report_type = str(message.get_param("report-type", "") or "").lower()
    if content_type == "multipart/report" and report_type == "feedback-report":
        return "complaint"
    if content_type == "multipart/report" and report_type == "delivery-status":
        return "bounce"
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    subject = str(message.get("Subject", "")).strip()
    automatic = auto.startswith("auto-replied") or bool(message.get("X-Autoreply"))
    if automatic or _AUTO_SUBJECT.match(subject):
        return "auto-reply"
    mailto = (settings.unsubscribe_mailto or "").lower()
    to = {a.lower() for _, a in getaddresses([str(v) for v in message.get_all("To", [])])}
    if mailto and mailto in to and requests_in_message(message):
        return "unsubscribe"
    if parseaddr(str(message.get("From", "")))[1].lower().startswith("mailer-daemon"):
        return "bounce"
    return "other"


def _complaint(
    message: Message, settings: Settings, complaints: list[str], result: InboxResult
) -> str:
    feedback = next(
        (p for p in message.walk() if p.get_content_type() == "message/feedback-report"), None
    )
    text = ""
    if feedback is not None:
        payload = feedback.get_payload()
        text = str(payload[0]) if isinstance(payload, list) and payload else str(payload)
    kind = re.search(r"^Feedback-Type:\s*([\w-]+)", text, re.IGNORECASE | re.MULTILINE)
    feedback_type = kind.group(1).lower() if kind else "unknown"
    if feedback_type != "abuse":
        return f"complaint ({feedback_type}): nothing done"
    recipient = bounces.recipient_behind(
        message, settings.bounce_address, settings.ledger_dir, id_key(settings)
    )
    if recipient is None:
        result.problems.append("an abuse complaint names no message of ours (not attributed)")
        return "complaint not attributed"
    complaints.append(recipient)
    return "complaint (abuse): suppressed"


def _tally(result: InboxResult, added: suppressions.Added) -> None:
    result.added += added.added
    result.already += len(added.already)
    result.refused += [address for address, _ in added.refused]


def _move(connection: imaplib.IMAP4, uids: list[str], done: str, can_move: bool) -> None:
    """Move messages by UID, never with a plain EXPUNGE (RFC 6851, RFC 4315)."""
    selection = ",".join(uids)
    if can_move:
        connection.uid("MOVE", selection, _quoted(done))
        return
    connection.uid("COPY", selection, _quoted(done))
    connection.uid("STORE", selection, "+FLAGS.SILENT", "(\\Deleted)")
    connection.uid("EXPUNGE", selection)


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
