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
import re
from collections.abc import Callable
from email import policy
from email.message import Message
from email.parser import BytesParser
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


def requests_in_mbox(
    path: Path,
    unreadable: list[str] | None = None,
    trust: Callable[[Message], str | None] | None = None,
) -> list[str]:
    """The readers behind the unsubscribe requests in an mbox (mail to the mailto target).

    ``trust`` (see :func:`mailed_request`) decides whom each message may
    unsubscribe; without it, the sender of any message saying "unsubscribe"
    (staff exported these by hand). A message that cannot be read is skipped
    and described in ``unreadable``.
    """
    if not path.is_file():
        raise InputError("no such mbox file.", file=path)
    box = mailbox.mbox(str(path))
    senders = []
    for number, key in enumerate(box.iterkeys(), start=1):
        try:
            message = BytesParser(policy=policy.compat32).parsebytes(box.get_bytes(key))
            address = trust(message) if trust is not None else _requester(message)
        except Exception as exc:  # a mangled message is skipped, never the whole batch
            if unreadable is not None:
                unreadable.append(f"message {number}: cannot be read ({type(exc).__name__})")
            continue
        if address:
            senders.append(address)
    return senders


def mailed_request(
    message: Message,
    mailto: str,
    reader_of: Callable[[str, str], str | None],
    authserv_id: str | None = None,
) -> str | None:
    """Whom an unsubscribe mail may unsubscribe, trusted by proof, never by its From alone.

    - Sent to the reader's own address ``unsubscribe+<issue>.<tag>@domain``
      (``compose.unsubscribe_mailto``) with a genuine keyed tag: the reader the
      ledger shows behind it (``reader_of(issue, tag)``), whatever From says and
      whatever the subject (mail clients blank it).
    - Otherwise (the bare address, typed by a person): its From, only when it
      says "unsubscribe" and the topmost ``Authentication-Results`` (the one the
      receiving server prepends, RFC 8601 §5; the one of ``authserv_id`` when
      set) shows ``dmarc=pass``, or ``dkim=pass`` whose ``header.d`` aligns
      with the From domain.

    None: not trusted; the message stays for staff.
    """
    from mailer.inbound import sent_to_base
    from mailer.verp import parse_verp

    reached = sent_to_base(message, mailto)
    parsed = parse_verp(reached, mailto) if reached else None
    if parsed is not None:
        reader = reader_of(*parsed)
        if reader is not None:
            return reader
    sender = _requester(message)
    if sender and authenticated(message, sender, authserv_id):
        return sender
    return None


def authenticated(message: Message, sender: str, authserv_id: str | None = None) -> bool:
    """Whether the receiving server's ``Authentication-Results`` vouch for ``sender``'s domain."""
    domain = sender.rpartition("@")[2].lower()
    for value in message.get_all("Authentication-Results", []):
        server, _, results = str(value).partition(";")
        name = server.split()[0].lower() if server.split() else ""
        if authserv_id and name != authserv_id.lower():
            continue  # another server's results (or a forged header below ours)
        methods = _results(results)
        if methods.get("dmarc", {}).get("result") == "pass":
            return True
        dkim = methods.get("dkim", {})
        signer = dkim.get("header.d", "").lower()
        return dkim.get("result") == "pass" and bool(signer) and _aligned(signer, domain)
    return False


def _results(text: str) -> dict[str, dict[str, str]]:
    """``dkim=pass header.d=x; dmarc=fail`` as {method: {result, properties}} (first of each)."""
    found: dict[str, dict[str, str]] = {}
    for clause in re.sub(r"\([^)]*\)", " ", text).split(";"):
        words = clause.split()
        if not words or "=" not in words[0]:
            continue
        method, _, result = words[0].partition("=")
        entry = {"result": result.lower()}
        for word in words[1:]:
            name, _, value = word.partition("=")
            entry[name.lower()] = value.strip('"')
        found.setdefault(method.lower(), entry)
    return found


def _aligned(signer: str, domain: str) -> bool:
    """Relaxed alignment (RFC 7489 §3.1.1), approximated without the public suffix list:
    the same domain, or one inside the other."""
    return signer == domain or domain.endswith("." + signer) or signer.endswith("." + domain)


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
