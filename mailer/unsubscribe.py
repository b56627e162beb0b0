"""Unsubscribing: signed one-click tokens, and the suppression list they feed.

The https target of List-Unsubscribe (and the footer link) carries a token per
reader: their address and an HMAC-SHA256 of it under ``MAILER_UNSUBSCRIBE_SECRET``,
so nobody can unsubscribe someone else by editing a URL; the endpoint
(``serve.py``) checks it. The mailto target is the reader's own keyed
subaddress (``compose.unsubscribe_mailto``), so a mailed request proves whom it
is for (``mailed_request``); mail to the bare address is trusted only on our
receiving server's word (``authenticated``). Exported requests are read from an
mbox by ``mailer unsubscribe --from-mbox``. Every path ends in
``recipients/suppressions.csv`` (``suppressions.py``), appended without
duplicates, so a suppressed address is never mailed again.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import mailbox
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.errors import ConfigError, InputError
from mailer.settings import Settings

if TYPE_CHECKING:
    from mailer.suppressions import Added

_MAC_BYTES = 16  # 128 bits of HMAC-SHA256: far beyond guessing
TEST_TAG = "test"  # the tag of a test copy's unsubscribe mailto: never a reader's (hex)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, address: str) -> bytes:
    message = b"mailer-unsubscribe\0" + address.lower().encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()[:_MAC_BYTES]


@dataclass(frozen=True)
class TokenData:
    """What a genuine token says: whose it is, from which issue, and whether it came in
    a test copy (``--test-to``), which must unsubscribe nobody."""

    address: str
    issue: str | None = None  # None: a token from before tokens held their issue
    test: bool = False


_VERSION = b"\x02"  # opaque tokens; older ones are ``<address>.<MAC>`` and stay valid
_CONTEXT = [b"mailer-unsubscribe-token"]


@functools.lru_cache(maxsize=4)
def _sealing_key(secret: bytes) -> bytes:
    """AES-256-SIV's key, derived from MAILER_UNSUBSCRIBE_SECRET (HKDF-SHA256)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derive = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"mailer token v2")
    return derive.derive(secret)


def make_token(secret: bytes, address: str, issue: str = "", *, test: bool = False) -> str:
    """An opaque token: the address, the issue and the test flag, encrypted and
    authenticated (AES-SIV: deterministic, so a resend carries the same link), base64url.

    No URL a link scanner, a proxy or a browser history keeps shows the address.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    if "\0" in issue or "\0" in address:
        raise ValueError("a token's issue and address hold no NUL")
    plain = f"{int(test)}\0{issue}\0{address}".encode()
    return _b64(_VERSION + AESSIV(_sealing_key(secret)).encrypt(plain, _CONTEXT))


def token_address(settings: Settings, token: str) -> str:
    """The address a genuine token names, checked with the configured secret."""
    secret = settings.unsubscribe_secret
    if secret is None:
        raise ConfigError("needed to check unsubscribe tokens.", field="MAILER_UNSUBSCRIBE_SECRET")
    found = read_token(secret.get_secret_value().encode(), token)
    if found.test:
        raise InputError(
            "this token comes from a test copy (--test-to): it unsubscribes nobody.",
            field="--token",
        )
    return found.address


def read_token(secret: bytes, token: str) -> TokenData:
    """What a genuine token says (either format); InputError for a forged or broken one."""
    token = token.strip()
    try:
        if "." in token:
            return TokenData(_legacy_address(secret, token))
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESSIV

        data = _unb64(token)
        if data[:1] != _VERSION:
            raise ValueError("unknown token version")
        try:
            plain = AESSIV(_sealing_key(secret)).decrypt(data[1:], _CONTEXT)
        except InvalidTag:
            raise ValueError("not sealed with our key") from None
        flag, issue, address = plain.decode("utf-8").split("\0", 2)
        return TokenData(address, issue or None, flag == "1")
    except (ValueError, UnicodeDecodeError):
        raise InputError(
            "the unsubscribe token is not genuine (forged, altered or cut).", field="--token"
        ) from None


def _legacy_address(secret: bytes, token: str) -> str:
    """``<address, base64url>.<MAC, base64url>``, as tokens were until opaque ones: links in
    old messages keep working."""
    encoded, _, mac = token.partition(".")
    address = _unb64(encoded).decode("utf-8")
    if not hmac.compare_digest(_unb64(mac), _mac(secret, address)):
        raise ValueError("forged")
    return address


@dataclass
class ByHand:
    """What ``mailer unsubscribe`` was given: the addresses, the reason to keep, and
    the messages of an mbox that named nobody (listed, never guessed)."""

    addresses: list[str]
    reason: str
    unreadable: list[str]
    typed: bool = True  # False for an mbox of requests: strangers' mail, not a person's typing

    def exit_code(self, result: Added) -> int:
        """2 when an address a person typed was refused (say it with the exit code
        too); an mbox's unusable requests are listed, not an error."""
        return 2 if result.refused and self.typed else 0


def by_hand(
    settings: Settings,
    addresses: list[str],
    *,
    reason: str = "unsubscribed",
    token: str | None = None,
    mbox: Path | None = None,
) -> ByHand:
    """Addresses typed, named by a one-click token, or asked for in an mbox of mailed
    requests. Unless staff gave their own reason, the file says how the request came."""
    request = ByHand(list(addresses), reason, [], typed=mbox is None)
    if token is not None:
        request.addresses.append(token_address(settings, token))
        if reason == "unsubscribed":
            request.reason = "one-click unsubscribe"
    if mbox is not None:
        request.addresses.extend(requests_in_mbox(mbox, request.unreadable))
        if request.reason == "unsubscribed":
            request.reason = "unsubscribe request by mail"
    if not request.addresses:
        raise InputError("name addresses, --token or --from-mbox.", field="ADDRESS")
    return request


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


def requested_issue(message: Message, mailto: str) -> str:
    """The issue an unsubscribe mail names through the reader's subaddress
    (``unsubscribe+<issue>.<tag>@``); "" for the bare address."""
    from mailer.inbound import sent_to_base
    from mailer.verp import parse_verp

    reached = sent_to_base(message, mailto)
    parsed = parse_verp(reached, mailto) if reached else None
    return parsed[0] if parsed is not None else ""


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
      says "unsubscribe" and our receiving server's ``Authentication-Results``
      (``authenticated``) vouch for its domain.

    None: not trusted; the message stays for staff.
    """
    from mailer.inbound import sent_to_base
    from mailer.verp import parse_verp

    reached = sent_to_base(message, mailto)
    parsed = parse_verp(reached, mailto) if reached else None
    if parsed is not None and parsed[1] == TEST_TAG:
        return None  # the mailto of a test copy (--test-to): it unsubscribes nobody
    if parsed is not None:
        reader = reader_of(*parsed)
        if reader is not None:
            return reader
    sender = _requester(message)
    if sender and authenticated(message, sender, authserv_id):
        return sender
    return None


def authenticated(message: Message, sender: str, authserv_id: str | None) -> bool:
    """Whether our receiving server's ``Authentication-Results`` vouch for ``sender``.

    Only the topmost header carrying ``authserv_id`` counts (RFC 8601 §5: the border
    server removes copies with its own id that arrive from outside); without an id,
    nothing does, since any sender can write such a header. It vouches with
    ``dmarc=pass`` for the sender's domain, or ``dkim=pass`` whose signing domain
    aligns with it.
    """
    if not authserv_id:
        return False
    domain = sender.rpartition("@")[2].lower()
    for value in message.get_all("Authentication-Results", []):
        clauses = _clauses(str(value))
        server = clauses[0].split() if clauses else []
        if not server or server[0].lower() != authserv_id.lower():
            continue
        for method, result, properties in map(_result, clauses[1:]):
            if result != "pass":
                continue
            if method == "dmarc" and properties.get("header.from", domain).lower() == domain:
                return True
            if method == "dkim":
                signer = properties.get("header.d") or properties.get("header.i", "")
                if _aligned(signer.rpartition("@")[2].lower(), domain):
                    return True
        return False
    return False


def _clauses(text: str) -> list[str]:
    """An Authentication-Results value split at its semicolons, with comments removed and
    quoted strings kept whole (so ``"x; dmarc=pass"`` inside a value is no result)."""
    clauses: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                current.append(char)
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
            current.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif char == ";":
            clauses.append("".join(current).strip())
            current = []
        else:
            quoted = char == '"'
            current.append(char)
    clauses.append("".join(current).strip())
    return [clause for clause in clauses if clause]


def _result(clause: str) -> tuple[str, str, dict[str, str]]:
    """``dkim=pass header.d=example.org`` as ("dkim", "pass", {"header.d": …})."""
    words = clause.split()
    method, _, result = (words[0] if words else "").partition("=")
    properties = {}
    for word in words[1:]:
        name, _, value = word.partition("=")
        properties[name.lower()] = value.strip('"')
    return method.lower(), result.lower(), properties


def _aligned(signer: str, domain: str) -> bool:
    """Relaxed alignment (RFC 7489 §3.1.1), approximated without the public suffix list:
    the same domain, or one inside the other, never a bare top-level domain."""
    if "." not in signer:
        return False
    return signer == domain or domain.endswith("." + signer) or signer.endswith("." + domain)


def _requester(message: Message) -> str | None:
    """The sender, when ``message`` is an unsubscribe request."""
    subject = str(message.get("Subject", "")).lower()
    payload = message.get_payload(decode=True) if not message.is_multipart() else b""
    body = payload if isinstance(payload, bytes) else b""
    first_line = body.decode("utf-8", "replace").strip().lower()[:100]
    if "unsubscribe" in subject or first_line.startswith("unsubscribe"):
        return parseaddr(str(message.get("From", "")))[1] or None
    return None
