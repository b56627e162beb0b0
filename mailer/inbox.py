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

Messages are read by structure first (``RFC822.SIZE``, ``BODYSTRUCTURE``): a
small one is fetched whole; of a large one only what a decision needs (its
header, the delivery-status or feedback part whole, the first text parts up to
64 KB, the returned message's header), so a report is never skipped for its
size (Exchange attaches the whole original) and a person's 10 MB reply is never
downloaded. Messages left for staff are remembered by UIDVALIDITY and UID, so
the next sync does not read them again. Memory stays bounded whatever the
folder's size: a fetch asks for at most ``FETCH_BYTES`` of whole messages, and
a batch of ``BATCH`` messages is read, written and moved before the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer import bounces, suppressions
from mailer.errors import ConfigError
from mailer.settings import ImapSettings, Settings
from mailer.verp import id_key

BATCH = 500  # messages classed, written and moved together
WHOLE = 256 * 1024  # bytes: a message this small is fetched whole
FETCH_BYTES = 16 * 1024 * 1024  # at most this much asked for in one FETCH
TEXT_BYTES = 256 * 1024  # of a large message's text parts, only the start
HEADERS_BYTES = 1024 * 1024  # a returned message's header part, read up to this
# imaplib refuses a server line over 1,000,000 bytes (its private _MAXLINE), and one
# BODYSTRUCTURE of a reply forwarding hundreds of messages is longer: every sync would
# stop there. Raised in this one place; tests/test_inbox.py fails if imaplib drops it.
LONGEST_LINE = 64 * 1024 * 1024
_MACHINE = {
    ("message", "delivery-status"),
    ("message", "global-delivery-status"),
    ("message", "feedback-report"),
    ("message", "disposition-notification"),
}
_BOUNDARY = b"mailer-structure-boundary-7f3c"


@dataclass
class InboxResult:
    """What reading the mailbox did, by effect."""

    name: str = "mailbox"
    effects: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    already: int = 0
    refused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    fatal: bool = False  # a setting must change (sign-in refused): exit 2, not 1
    # Messages left for staff, to skip next time: {"uidvalidity": n, "uids": [...]}.
    left: dict[str, Any] = field(default_factory=dict)

    def count(self, effect: str) -> None:
        self.effects[effect] = self.effects.get(effect, 0) + 1


def read_mailbox(
    settings: Settings, recipients_dir: Path, remembered: dict[str, Any] | None = None
) -> InboxResult:
    """Process every message of the folder; move each once its effect is on disk.

    ``remembered`` is the previous sync's ``InboxResult.left``: those messages are
    not read again while the folder's UIDVALIDITY is the same.
    """
    result = InboxResult()
    try:
        client = _connect(settings.imap)
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
        _process_folder(client, settings, recipients_dir, result, remembered or {})
        _apply([], settings, recipients_dir, result, close_windows=True)
    except (OSError, imaplib.IMAP4.error) as exc:
        result.error = f"reading the mailbox stopped ({type(exc).__name__}: {str(exc)[:120]})"
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()
    return result


def _connect(settings: ImapSettings) -> Any:
    """A signed-in IMAPClient (imapclient: modified UTF-7 names, parsed BODYSTRUCTURE)."""
    from imapclient import IMAPClient

    if getattr(imaplib, "_MAXLINE", LONGEST_LINE) < LONGEST_LINE:
        imaplib._MAXLINE = LONGEST_LINE  # type: ignore[attr-defined]  # see LONGEST_LINE
    s = settings
    if not s.host or not s.username:
        raise ConfigError("reading the mailbox needs these settings.", field="MAILER_IMAP_HOST")
    if s.auth == "password" and s.password is None:
        raise ConfigError("reading the mailbox needs its password.", field="MAILER_IMAP_PASSWORD")
    context = ssl.create_default_context()
    tls = s.security == "tls"
    client = IMAPClient(
        s.host, s.port, ssl=tls, ssl_context=context if tls else None, timeout=s.timeout
    )
    try:
        if s.security == "starttls":
            client.starttls(context)
        if s.auth == "xoauth2":
            _sign_in_by_token(client, s)
        else:
            assert s.password is not None
            client.login(s.username, s.password.get_secret_value())
    except imaplib.IMAP4.error as exc:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()
        names = (
            "MAILER_IMAP_USERNAME and the MAILER_OAUTH_* settings (and the application's "
            "IMAP.AccessAsApp permission)"
            if s.auth == "xoauth2"
            else "MAILER_IMAP_USERNAME and MAILER_IMAP_PASSWORD"
        )
        reply = " ".join(str(exc).split())[:200]
        raise _SignInRefused(
            f"the mailbox {s.host} refused the sign-in ({reply}); check {names}."
        ) from None
    return client


class _SignInRefused(Exception):
    """The mailbox, or the token endpoint before it, refused us: a setting must change."""


def _sign_in_by_token(client: Any, settings: ImapSettings) -> None:
    """AUTHENTICATE XOAUTH2 with a client-credentials token (the same MAILER_OAUTH_*
    settings as SMTP; Microsoft 365 needs the application's IMAP.AccessAsApp)."""
    from mailer.oauth import TokenSource, TokenUnavailable

    assert settings.username
    try:
        token = asyncio.run(TokenSource(settings.oauth).token())
    except TokenUnavailable as exc:
        raise _SignInRefused(f"no OAuth2 token for the mailbox: {exc}") from None
    answers = [f"user={settings.username}\x01auth=Bearer {token.value}\x01\x01".encode()]
    # The first challenge gets the token; an error challenge (base64 JSON) gets an
    # empty response, as the XOAUTH2 protocol asks, and the server then says no.
    client.sasl_login("XOAUTH2", lambda _: answers.pop() if answers else b"")


def _process_folder(
    client: Any,
    settings: Settings,
    recipients_dir: Path,
    result: InboxResult,
    remembered: dict[str, Any],
) -> None:
    folder, done = settings.imap.folder, settings.imap.done_folder
    if not client.folder_exists(done):
        client.create_folder(done)
    validity = _uid_validity(client, folder)  # selects it
    known = set(remembered.get("uids", [])) if remembered.get("uidvalidity") == validity else set()
    uids = sorted(client.search("ALL"))
    left = [uid for uid in uids if uid in known]
    if left:
        result.effects["left for staff (already seen)"] = len(left)
    fresh = [uid for uid in uids if uid not in known]
    can_move = client.has_capability("MOVE")
    for start in range(0, len(fresh), BATCH):
        batch = list(_fetch(client, fresh[start : start + BATCH]))
        handled = _apply(batch, settings, recipients_dir, result)  # effects on disk first
        left += [uid for uid, _ in batch if uid not in handled]
        if handled:
            # UIDs name the same messages only while UIDVALIDITY holds (RFC 3501 2.3.1.1):
            # a folder recreated meanwhile must not have other messages moved.
            if _uid_validity(client, folder) != validity:
                raise imaplib.IMAP4.error("the folder's UIDVALIDITY changed; run sync again")
            _move(client, handled, done, can_move)
    result.left = {"uidvalidity": validity, "uids": sorted(left)}


def _uid_validity(client: Any, folder: str) -> int:
    """The folder's UIDVALIDITY, by selecting it again: STATUS on the selected folder may
    answer from the session's own view (Dovecot does), blind to a folder recreated
    meanwhile by another client."""
    return int(client.select_folder(folder)[b"UIDVALIDITY"])


def _fetch(client: Any, uids: list[int]) -> Iterator[tuple[int, bytes]]:
    """(UID, bytes to read) per message: small ones whole, in fetches of at most
    FETCH_BYTES; of large ones only what a decision needs (``_parts``)."""
    shapes = client.fetch(uids, ["RFC822.SIZE", "BODYSTRUCTURE"])
    group: list[int] = []
    size = 0
    for uid in uids:
        data = shapes.get(uid, {})
        length = int(data.get(b"RFC822.SIZE", 0))
        if length > WHOLE and data.get(b"BODYSTRUCTURE") is not None:
            yield uid, _parts(client, uid, data[b"BODYSTRUCTURE"])
            continue
        if group and size + length > FETCH_BYTES:
            yield from _whole(client, group)
            group, size = [], 0
        group.append(uid)
        size += length
    if group:
        yield from _whole(client, group)


def _whole(client: Any, uids: list[int]) -> Iterator[tuple[int, bytes]]:
    fetched = client.fetch(uids, ["BODY.PEEK[]"])
    for uid in uids:
        raw = fetched.get(uid, {}).get(b"BODY[]")
        if raw is not None:
            yield uid, bytes(raw)


def _leaves(body: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a BODYSTRUCTURE with its part number (``2``, ``1.2``)."""
    if body.is_multipart:
        for number, child in enumerate(body[0], start=1):
            yield from _leaves(child, f"{path}.{number}" if path else str(number))
    else:
        yield path or "1", body


def _parts(client: Any, uid: int, structure: Any) -> bytes:
    """A large message as a small one: its header and the parts a decision needs,
    under one multipart of the message's own type."""
    wanted: list[tuple[str, str, bytes]] = []  # (section, response key, part header)
    texts = 0
    for path, leaf in _leaves(structure):
        kind = (_text(leaf[0]).lower(), _text(leaf[1]).lower())
        header = _part_header(kind, leaf)
        if kind in _MACHINE:
            wanted.append((f"BODY.PEEK[{path}]", f"BODY[{path}]", header))
        elif kind in (("text", "rfc822-headers"), ("message", "global-headers")):
            plain = b"Content-Type: text/rfc822-headers\r\n"
            section = f"BODY.PEEK[{path}]<0.{HEADERS_BYTES}>"
            wanted.append((section, f"BODY[{path}]<0>", plain))
        elif kind == ("message", "rfc822"):
            # The attached message's header alone, still an attached message: a person
            # forwarding mail has not sent a report, whole or rebuilt.
            section = f"{path}.HEADER"
            plain = b"Content-Type: message/rfc822\r\n"
            wanted.append((f"BODY.PEEK[{section}]", f"BODY[{section}]", plain))
        elif kind == ("message", "global"):
            # RFC 6532's internationalized message: servers give no .HEADER of it, so
            # its start (the header first) is read instead.
            section = f"BODY.PEEK[{path}]<0.{HEADERS_BYTES}>"
            plain = b"Content-Type: message/rfc822\r\n"
            wanted.append((section, f"BODY[{path}]<0>", plain))
        elif kind[0] == "text" and texts < 2:
            texts += 1
            wanted.append((f"BODY.PEEK[{path}]<0.{TEXT_BYTES}>", f"BODY[{path}]<0>", header))
    fetched = client.fetch([uid], ["BODY.PEEK[HEADER]", *(w[0] for w in wanted)]).get(uid, {})
    head = _without_content_headers(bytes(fetched.get(b"BODY[HEADER]", b"")))
    top = structure[1] if structure.is_multipart else b"mixed"
    report = _param(structure[2] if structure.is_multipart else None, "report-type")
    extra = f'; report-type="{report}"' if report else ""
    out = [
        head,
        f"MIME-Version: 1.0\r\nContent-Type: multipart/{_text(top).lower()}{extra}; "
        f'boundary="{_BOUNDARY.decode()}"\r\n\r\n'.encode(),
    ]
    for _, key, header in wanted:
        out += [b"--", _BOUNDARY, b"\r\n", header, b"\r\n", bytes(fetched.get(key.encode(), b""))]
        out.append(b"\r\n")
    out += [b"--", _BOUNDARY, b"--\r\n"]
    return b"".join(out)


def _part_header(kind: tuple[str, str], leaf: Any) -> bytes:
    """The MIME header of a fetched part, from its BODYSTRUCTURE (type, charset, encoding)."""
    charset = _param(leaf[2], "charset")
    encoding = _text(leaf[5]) if len(leaf) > 5 and leaf[5] else "7bit"
    line = f"Content-Type: {kind[0]}/{kind[1]}" + (f'; charset="{charset}"' if charset else "")
    return f"{line}\r\nContent-Transfer-Encoding: {encoding}\r\n".encode()


def _param(params: Any, name: str) -> str:
    """A BODYSTRUCTURE parameter (``charset``) by name; '' when absent."""
    if not isinstance(params, tuple):
        return ""
    pairs = zip(params[::2], params[1::2], strict=False)
    return next((_text(v) for k, v in pairs if _text(k).lower() == name), "")


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def _without_content_headers(head: bytes) -> bytes:
    """A header block without its MIME fields (the rebuilt body brings its own)."""
    kept: list[bytes] = []
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = name in (b"content-type", b"content-transfer-encoding", b"mime-version")
        if not skipping and line.strip():
            kept.append(line)
    return b"".join(kept)


def _apply(
    batch: list[tuple[int, bytes]],
    settings: Settings,
    recipients_dir: Path,
    result: InboxResult,
    *,
    close_windows: bool = False,
) -> list[int]:
    """Write the effects of a batch; returns the UIDs to move (all but staff's mail).
    ``close_windows`` also counts deferrals whose dispatch window ended (once a sync:
    it reads every ledger)."""
    report = bounces.process_messages(
        [raw for _, raw in batch],
        settings.ledger_dir,
        recipients_dir,
        bounce_address=settings.bounce_address,
        soft_limit=settings.bounce_soft_limit,
        key=id_key(settings),
        window=settings.dispatch_window if close_windows else None,
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


def _move(client: Any, uids: list[int], done: str, can_move: bool) -> None:
    """Move messages by UID, never with a plain EXPUNGE (RFC 6851, RFC 4315)."""
    if can_move:
        client.move(uids, done)
        return
    client.copy(uids, done)
    client.add_flags(uids, [b"\\Deleted"], silent=True)
    client.uid_expunge(uids)
