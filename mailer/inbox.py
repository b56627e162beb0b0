"""The inbound mailbox, read over IMAP by ``mailer sync``: bounces, unsubscribe mail, complaints.

Each message in ``MAILER_IMAP_FOLDER`` is classed, its effect written (ledger,
``suppressions.csv``), and only then moved to ``MAILER_IMAP_DONE_FOLDER``: a
crash never loses a bounce or an unsubscribe, and since every effect is
idempotent, a message processed twice (a crash between writing and moving)
changes nothing the second time. The move is UID MOVE (RFC 6851) where the
server offers it, else UID COPY, UID STORE ``\\Deleted`` and UID EXPUNGE (RFC
4315), never a plain EXPUNGE that would take other clients' deletions along.

What each message is and does is decided by ``inbound.py`` (the one reader)
and ``bounces.py``: delivery reports and complaints take effect, automatic
replies change nothing and are moved aside, an unsubscribe mail with proof
(``unsubscribe.mailed_request``) suppresses its reader, and a person's reply
(or an unsubscribe mail without proof) stays in the folder for staff. Folder
names go to the server in modified UTF-7 (``Traités``).
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from mailer import bounces, suppressions
from mailer.errors import ConfigError
from mailer.settings import Settings
from mailer.verp import id_key


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
    fatal: bool = False  # a setting must change (sign-in refused): exit 2, not 1

    def count(self, effect: str) -> None:
        self.effects[effect] = self.effects.get(effect, 0) + 1


def read_mailbox(settings: Settings, recipients_dir: Path) -> InboxResult:
    """Process every message of the folder; move each once its effect is on disk."""
    result = InboxResult()
    try:
        connection = _connect(settings)
    except _SignInRefused as exc:
        result.error, result.fatal = str(exc), True
        return result
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        result.error = (
            f"the mailbox {settings.imap_host} could not be read ({type(exc).__name__}); "
            "check MAILER_IMAP_HOST, _PORT and _SECURITY."
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
    try:
        if s.imap_auth == "xoauth2":
            _sign_in_by_token(connection, s)
        else:
            assert s.imap_password is not None
            connection.login(s.imap_username, s.imap_password.get_secret_value())
    except imaplib.IMAP4.error as exc:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            connection.logout()
        names = (
            "MAILER_IMAP_USERNAME and the MAILER_OAUTH_* settings (and the application's "
            "IMAP.AccessAsApp permission)"
            if s.imap_auth == "xoauth2"
            else "MAILER_IMAP_USERNAME and MAILER_IMAP_PASSWORD"
        )
        reply = " ".join(str(exc).split())[:200]
        raise _SignInRefused(
            f"the mailbox {s.imap_host} refused the sign-in ({reply}); check {names}."
        ) from None
    return connection


class _SignInRefused(Exception):
    """The mailbox, or the token endpoint before it, refused us: a setting must change."""


def _sign_in_by_token(connection: imaplib.IMAP4, settings: Settings) -> None:
    """AUTHENTICATE XOAUTH2 with a client-credentials token (the same MAILER_OAUTH_*
    settings as SMTP; Microsoft 365 needs the application's IMAP.AccessAsApp)."""
    import asyncio

    from mailer.oauth import TokenSource, TokenUnavailable

    assert settings.imap_username
    try:
        token = asyncio.run(TokenSource(settings).token())
    except TokenUnavailable as exc:
        raise _SignInRefused(f"no OAuth2 token for the mailbox: {exc}") from None
    answers = [f"user={settings.imap_username}\x01auth=Bearer {token.value}\x01\x01".encode()]
    # The first challenge gets the token; an error challenge (base64 JSON) gets an
    # empty response, as the XOAUTH2 protocol asks, and the server then says no.
    connection.authenticate("XOAUTH2", lambda _: answers.pop() if answers else b"")


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
    report = bounces.process_messages(
        [raw for _, raw in batch],
        settings.ledger_dir,
        recipients_dir,
        bounce_address=settings.bounce_address,
        soft_limit=settings.bounce_soft_limit,
        key=id_key(settings),
        window=settings.dispatch_window,
        unsubscribe_address=settings.unsubscribe_mailto,
        authserv_id=settings.imap_authserv_id,
    )
    _tally(result, report.suppressed)
    result.problems += report.skipped
    handled = []
    for (uid, _), effect in zip(batch, report.effects, strict=True):
        result.count(effect)
        if effect != bounces.LEFT_FOR_STAFF:
            handled.append(uid)
    return handled


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
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 §5.1.3), quoted."""
    from imapclient import imap_utf7

    name = bytes(imap_utf7.encode(folder)).decode("ascii")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
