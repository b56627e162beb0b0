"""Per-reader ids that come back to us: the VERP envelope sender and the Message-ID.

A bounce names the message it is about by the address it returns to (VERP,
``bounces+<issue>.<tag>@domain``) or by quoting its Message-ID
(``<issue>.<digest>@domain``). Both are keyed with a secret (HMAC-SHA256 under
``MAILER_BOUNCE_SECRET``, else a key derived from ``MAILER_UNSUBSCRIBE_SECRET``):
nobody who knows an address and an issue id can compute them, so nobody can
forge a bounce that suppresses a reader of their choosing. Without any secret
(a dry run, or no bounce handling configured) the Message-ID is a plain hash.

Kept apart from the bounce reader, so composing a message imports nothing of it.
"""

from __future__ import annotations

import hashlib
import hmac

from mailer.settings import Settings

_TAG_LENGTH = 12  # hex digits: 48 bits, per issue; forging one is guessing it


def id_key(settings: Settings) -> bytes | None:
    """The key of tags and Message-IDs, or None when no secret is configured."""
    if settings.bounce_secret is not None:
        return settings.bounce_secret.get_secret_value().encode()
    if settings.unsubscribe_secret is not None:
        base = settings.unsubscribe_secret.get_secret_value().encode()
        return hmac.new(base, b"mailer-message-ids", hashlib.sha256).digest()
    return None


def _digest(key: bytes | None, issue: str, address: str) -> str:
    data = f"{issue}\0{address.lower()}".encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def tag(key: bytes, issue: str, address: str) -> str:
    """A recipient's short tag in one issue's VERP address."""
    return _digest(key, issue, address)[:_TAG_LENGTH]


def verp_address(bounce_address: str, key: bytes, issue: str, recipient: str) -> str:
    """``bounces+2017-03.1a2b3c4d5e6f@isu.example.org`` for ``recipient`` in ``issue``."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{issue}.{tag(key, issue, recipient)}@{domain}"


def parse_verp(address: str, bounce_address: str) -> tuple[str, str] | None:
    """(issue, tag) when ``address`` is one of our VERP addresses."""
    local, _, domain = address.rpartition("@")
    base_local, _, base_domain = bounce_address.rpartition("@")
    if domain.lower() != base_domain.lower() or not local.startswith(base_local + "+"):
        return None
    issue, dot, recipient_tag = local[len(base_local) + 1 :].rpartition(".")
    return (issue, recipient_tag.lower()) if dot and issue else None


def message_id(key: bytes | None, issue: str, address: str, domain: str) -> str:
    """Deterministic per issue and recipient, so a resend carries the same Message-ID."""
    return f"<{issue}.{_digest(key, issue, address)[:24]}@{domain}>"
