"""OAuth2 sign-in for SMTP (SASL XOAUTH2): access tokens by the client-credentials grant.

Microsoft 365 is retiring password sign-in for SMTP; its app-only alternative
is a token from the tenant's token endpoint (``MAILER_OAUTH_TOKEN_URL``) for an
application (``MAILER_OAUTH_CLIENT_ID`` and ``_CLIENT_SECRET``) with the scope
``https://outlook.office365.com/.default``. The token request and its error
responses are Authlib's (``OAuth2Session``, over requests): a well-kept
implementation of RFC 6749 that parses token responses, ``expires_in`` and
error codes, so we do not. A token is fetched rarely (about once an hour), so
the blocking request runs in a thread.

:class:`TokenSource` caches the token and renews it before it expires (with a
margin of a tenth of its life, at most five minutes) and whenever the relay
refuses it once. One fetch at a time, shared by every connection. The secret
and the tokens never appear in messages, the ledger or logs.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.settings import Settings

Clock = Callable[[], float]


class TokenUnavailable(Exception):
    """No token: the endpoint refused the client, or could not be reached."""


@dataclass(frozen=True)
class Token:
    """An access token and when (``clock`` seconds) to stop using it."""

    value: str = field(repr=False)
    renew_at: float
    expires_at: float


class TokenSource:
    """Access tokens for the sending mailbox, cached and renewed before they expire."""

    def __init__(self, settings: Settings, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.fetched = 0  # how many tokens this run obtained (tests and the summary)
        self._token: Token | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> Token:
        """A token that is not about to expire; fetches one when needed."""
        async with self._lock:
            current = self._token
            if current is None or self.clock() >= current.renew_at:
                current = self._token = await asyncio.to_thread(self._fetch)
                self.fetched += 1
            return current

    def refused(self, token: Token) -> None:
        """The relay refused ``token``: the next call fetches a new one."""
        if self._token is token:
            self._token = None

    def _fetch(self) -> Token:
        from authlib.common.errors import AuthlibBaseError  # only when signing in by OAuth
        from authlib.integrations.requests_client import OAuth2Session
        from requests import RequestException

        s = self.settings
        assert s.oauth_token_url and s.oauth_client_id and s.oauth_client_secret
        session = OAuth2Session(
            client_id=s.oauth_client_id,
            client_secret=s.oauth_client_secret.get_secret_value(),
            scope=s.oauth_scope,
            token_endpoint_auth_method="client_secret_post",
        )
        started = self.clock()
        try:
            answer = session.fetch_token(
                s.oauth_token_url, grant_type="client_credentials", timeout=s.smtp_timeout
            )
        except AuthlibBaseError as exc:
            raise TokenUnavailable(_refusal(exc.error, exc.description)) from None
        except RequestException as exc:
            raise TokenUnavailable(
                f"the token endpoint could not be reached ({type(exc).__name__}); check "
                "MAILER_OAUTH_TOKEN_URL and the network."
            ) from None
        finally:
            session.close()
        value = answer.get("access_token")
        if not isinstance(value, str) or not value:
            raise TokenUnavailable(
                "the token endpoint answered without an access token; check MAILER_OAUTH_TOKEN_URL."
            )
        life = float(answer.get("expires_in") or 3600)
        margin = min(300.0, life / 10)
        return Token(value, started + life - margin, started + life)


def _refusal(error: str | None, description: str | None) -> str:
    """What to tell staff when the token endpoint refuses (never the secret)."""
    text = f"{error or 'refused'}: {(description or '').splitlines()[0][:200]}".rstrip(": ")
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
