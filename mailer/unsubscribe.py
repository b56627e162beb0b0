"""Unsubscribing: signed one-click tokens, and the suppression list they feed.

The https target of List-Unsubscribe (and the footer link) carries a token per
reader: their address and an HMAC-SHA256 of it under ``MAILER_UNSUBSCRIBE_SECRET``,
so nobody can unsubscribe someone else by editing a URL. The web endpoint that
receives the RFC 8058 one-click POST calls ``mailer unsubscribe --token TOKEN``
(or this module). Requests mailed to the mailto target are read from an mbox by
``mailer unsubscribe --from-mbox``. Every path ends in
``recipients/suppressions.csv`` (``suppressions.py``), appended without
duplicates, so a suppressed address is never mailed again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mailbox
from email.message import Message
from email.utils import parseaddr
from pathlib import Path

from mailer.errors import ConfigError, InputError
from mailer.settings import Settings

_MAC_BYTES = 16  # 128 bits of HMAC-SHA256: far beyond guessing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, address: str) -> bytes:
    message = b"mailer-unsubscribe\0" + address.lower().encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(secret: bytes, address: str) -> str:
    """``<address, base64url>.<MAC, base64url>``: opaque in a URL, checkable offline."""
    return f"{_b64(address.encode('utf-8'))}.{_b64(_mac(secret, address))}"


def token_address(settings: Settings, token: str) -> str:
    """The address a genuine token names, checked with the configured secret."""
    secret = settings.unsubscribe_secret
    if secret is None:
        raise ConfigError("needed to check unsubscribe tokens.", field="MAILER_UNSUBSCRIBE_SECRET")
    return verify_token(secret.get_secret_value().encode(), token)


def verify_token(secret: bytes, token: str) -> str:
    """The address a genuine token names; raises InputError for a forged or broken one."""
    try:
        encoded, _, mac = token.strip().partition(".")
        address = _unb64(encoded).decode("utf-8")
        genuine = hmac.compare_digest(_unb64(mac), _mac(secret, address))
    except (ValueError, UnicodeDecodeError):
        genuine = False
    if not genuine:
        raise InputError(
            "the unsubscribe token is not genuine (forged, altered or cut).", field="--token"
        )
    return address


def requests_in_mbox(path: Path, unreadable: list[str] | None = None) -> list[str]:
    """Senders of the unsubscribe requests in an mbox (mail sent to the mailto target).

    A request is any message whose subject or first text line says "unsubscribe"
    (what mail clients send for a List-Unsubscribe mailto); others are ignored.
    A message that cannot be read is skipped and described in ``unreadable``.
    """
    if not path.is_file():
        raise InputError("no such mbox file.", file=path)
    senders = []
    for number, message in enumerate(mailbox.mbox(str(path)), start=1):
        try:
            address = _requester(message)
        except Exception as exc:  # a mangled message is skipped, never the whole batch
            if unreadable is not None:
                unreadable.append(f"message {number}: cannot be read ({type(exc).__name__})")
            continue
        if address:
            senders.append(address)
    return senders


def requests_in_message(message: Message) -> list[str]:
    """The sender of ``message`` when it asks to unsubscribe, else nothing."""
    found = _requester(message)
    return [found] if found else []


def _requester(message: Message) -> str | None:
    """The sender, when ``message`` is an unsubscribe request."""
    subject = str(message.get("Subject", "")).lower()
    payload = message.get_payload(decode=True) if not message.is_multipart() else b""
    body = payload if isinstance(payload, bytes) else b""
    first_line = body.decode("utf-8", "replace").strip().lower()[:100]
    if "unsubscribe" in subject or first_line.startswith("unsubscribe"):
        return parseaddr(str(message.get("From", "")))[1] or None
    return None
