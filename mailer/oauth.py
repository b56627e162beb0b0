"""OAuth2 sign-in for SMTP (SASL XOAUTH2): access tokens by the client-credentials grant.

Microsoft 365 is retiring password sign-in for SMTP; its app-only alternative
is a token from the tenant's token endpoint (``MAILER_OAUTH_TOKEN_URL``) for an
application (``MAILER_OAUTH_CLIENT_ID`` and ``_CLIENT_SECRET``) with the scope
``https://outlook.office365.com/.default``. The token request is one form POST
(requests; the client secret in the body, ``client_secret_post``), never
following a redirect, and its answer is validated as RFC 6749 §5 says: JSON
whatever the Content-Type, an error with or without a description,
``token_type`` Bearer, ``expires_in`` a number or a numeric string. Every odd
answer is one clear line (:class:`TokenUnavailable`). A token is fetched
rarely (about once an hour), so the blocking request runs in a thread.

:class:`TokenSource` caches the token and renews it before it expires (with a
margin of a tenth of its life, at most five minutes) and whenever the relay
refuses it once. One fetch at a time, shared by every connection. The secret
and the tokens never appear in messages, the ledger or logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailer.settings import OAuthSettings

Clock = Callable[[], float]


class TokenUnavailable(Exception):
    """No token: the endpoint refused the client, or could not be reached."""


@dataclass(frozen=True)
class Token:
    """An access token and when (``clock`` seconds) to fetch the next one."""

    value: str = field(repr=False)
    renew_at: float


class TokenSource:
    """Access tokens for the sending mailbox, cached and renewed before they expire."""

    def __init__(self, settings: OAuthSettings, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._token: Token | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> Token:
        """A token that is not about to expire; fetches one when needed."""
        async with self._lock:
            current = self._token
            if current is None or self.clock() >= current.renew_at:
                current = self._token = await asyncio.to_thread(self._fetch)
            return current

    def refused(self, token: Token) -> None:
        """The relay refused ``token``: the next call fetches a new one."""
        if self._token is token:
            self._token = None

    def _fetch(self) -> Token:
        import requests  # only when signing in by OAuth

        s = self.settings
        assert s.token_url and s.client_id and s.client_secret
        form = {
            "grant_type": "client_credentials",
            "client_id": s.client_id,
            "client_secret": s.client_secret.get_secret_value(),
        }
        if s.scope:
            form["scope"] = s.scope
        started = self.clock()
        try:
            with requests.post(
                s.token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=s.timeout,
                allow_redirects=False,  # the client secret must reach no other host
                stream=True,
            ) as answer:
                body = _read_whole(answer, self.clock)
                status = answer.status_code
        except requests.RequestException as exc:
            raise TokenUnavailable(
                f"the token endpoint could not be reached ({type(exc).__name__}); check "
                "MAILER_OAUTH_TOKEN_URL and the network."
            ) from None
        return token_from_answer(status, body, started)


MAX_ANSWER = 64 * 1024  # a token answer is a few kilobytes
ANSWER_SECONDS = 30.0  # the whole answer, however slowly it trickles in


def _read_whole(answer: Any, clock: Clock) -> bytes:
    """The answer's body, at most MAX_ANSWER + 1 bytes and within ANSWER_SECONDS in all."""
    deadline = clock() + ANSWER_SECONDS
    body = b""
    # read1: whatever has arrived (decoded), not a full chunk; a trickle is seen trickling.
    while len(body) <= MAX_ANSWER and (chunk := answer.raw.read1(4096, decode_content=True)):
        body += chunk
        if clock() > deadline:
            raise TokenUnavailable(
                f"the token endpoint's answer was still coming after {ANSWER_SECONDS:.0f} s; "
                "check MAILER_OAUTH_TOKEN_URL."
            )
    return body


def token_from_answer(status: int, body: bytes, started: float) -> Token:
    """A token from the endpoint's answer, validated as RFC 6749 §5 says; else a clear
    TokenUnavailable (never a traceback, never the secret)."""
    if 300 <= status < 400:
        raise TokenUnavailable(
            f"the token endpoint answered with a redirect ({status}); the client secret never "
            "follows one: set MAILER_OAUTH_TOKEN_URL to the endpoint's own https address."
        )
    try:
        data = json.loads(body) if len(body) <= MAX_ANSWER else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TokenUnavailable(
            f"the token endpoint answered something that is not a token response (HTTP "
            f"{status}); check MAILER_OAUTH_TOKEN_URL."
        )
    if "error" in data:
        error, description = data.get("error"), data.get("error_description")
        raise TokenUnavailable(
            _refusal(str(error), description if isinstance(description, str) else None)
        )
    value = data.get("access_token")
    if status != 200 or not isinstance(value, str) or not value:
        raise TokenUnavailable(
            f"the token endpoint answered without an access token (HTTP {status}); check "
            "MAILER_OAUTH_TOKEN_URL."
        )
    kind = data.get("token_type")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise TokenUnavailable(
            f"the token endpoint gave a token of type {str(kind)[:20]!r}, not Bearer; check "
            "MAILER_OAUTH_TOKEN_URL and MAILER_OAUTH_SCOPE."
        )
    life = _seconds(data.get("expires_in", 3600))
    margin = min(300.0, life / 10)
    return Token(value, started + life - margin)


def _seconds(value: object) -> float:
    """``expires_in``: a JSON number or a numeric string (some endpoints send "3599")."""
    try:
        number = isinstance(value, int | float | str) and not isinstance(value, bool)
        seconds = float(value) if number else -1.0  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        seconds = -1.0
    if not 1 <= seconds < 10**7:
        raise TokenUnavailable(
            f"the token endpoint gave an expires_in that is not a number of seconds "
            f"({str(value)[:20]!r}); check MAILER_OAUTH_TOKEN_URL."
        )
    return seconds


def _refusal(error: str | None, description: str | None) -> str:
    """What to tell staff when the token endpoint refuses (never the secret), in one
    short line whatever the server sent."""
    error = " ".join((error or "").split())[:80] or None
    first_line = next(iter((description or "").splitlines()), "")[:200]
    text = f"{error or 'refused'}: {first_line}".rstrip(": ")
    if "AADSTS7000222" in (description or ""):
        return (
            f"the client secret has expired ({text}). Create a new secret for the "
            "application in Microsoft Entra ID (Certificates & secrets) and put it in "
            "MAILER_OAUTH_CLIENT_SECRET."
        )
    if error in ("invalid_client", "unauthorized_client"):
        return (
            f"the token endpoint refused the application ({text}); check "
            "MAILER_OAUTH_CLIENT_ID and MAILER_OAUTH_CLIENT_SECRET."
        )
    if error == "invalid_scope":
        return f"the token endpoint refused the scope ({text}); check MAILER_OAUTH_SCOPE."
    return (
        f"the token endpoint refused to issue a token ({text}); check MAILER_OAUTH_TOKEN_URL, "
        "MAILER_OAUTH_CLIENT_ID, MAILER_OAUTH_CLIENT_SECRET and MAILER_OAUTH_SCOPE."
    )


def xoauth2(mailbox: str, token: Token) -> bytes:
    """The SASL XOAUTH2 initial response: base64 of ``user=…^Aauth=Bearer …^A^A``."""
    raw = f"user={mailbox}\x01auth=Bearer {token.value}\x01\x01".encode()
    return base64.b64encode(raw)
