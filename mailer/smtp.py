"""The SMTP session behind one small interface, and the one table that classes it.

The sender (``delivery.py``) sees only :class:`Connection`: open (connect,
EHLO, STARTTLS, AUTH), envelope (MAIL and RCPT), data, reset, quit. What the
relay or the network says comes back as one of four exceptions of ours, mapped
from aiosmtplib's in one place (:func:`_mapped`), and :func:`classify` turns each
into a verdict of ``replies.py``: sent, failed (the mailbox), transient, relay
(stop, keep pending) or fatal (stop: a setting must change). So retry, pause and
classification rules are tested against a fake connection in milliseconds, and
against a real server over TCP beside them.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from typing import Protocol

import aiosmtplib

from mailer.oauth import Token, TokenSource, TokenUnavailable, xoauth2
from mailer.replies import Cause, Reading, Verdict, read_reply
from mailer.settings import SmtpSettings


class SmtpProblem(Exception):
    """Root of what a connection reports."""


class Refused(SmtpProblem):
    """The relay answered with a refusal (4xx or 5xx) at ``stage``."""

    def __init__(self, code: int, text: str, stage: str) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text, self.stage = code, text, stage


class AuthFailed(Refused):
    """The relay refused the login."""


class TlsFailed(SmtpProblem):
    """A certificate or handshake problem, or a relay without the STARTTLS we require."""


class Lost(SmtpProblem):
    """No answer: a timeout, a dropped or refused connection."""


class TooLarge(SmtpProblem):
    """The message is larger than the relay's advertised SIZE (RFC 1870)."""


class Connection(Protocol):
    """One SMTP session, as the sender uses it."""

    @property
    def is_open(self) -> bool: ...

    @property
    def size_limit(self) -> int:
        """The relay's advertised SIZE in bytes; 0 when it names none."""
        ...

    async def open(self) -> None: ...

    async def envelope(self, sender: str, recipient: str) -> None: ...

    async def data(self, wire: bytes) -> tuple[int, str]:
        """Send DATA (``wire``: CRLF, dot-stuffed, ended by ``.``); the 2xx reply."""
        ...

    async def reset(self) -> None: ...

    async def quit(self) -> None: ...

    def close(self) -> None: ...


ConnectionFactory = Callable[[], Connection]


def classify(problem: SmtpProblem) -> Reading:
    """The one table: what each problem means for the recipient and the run."""
    if isinstance(problem, AuthFailed | TlsFailed | TokenRefused):
        return Reading(Verdict.FATAL)
    if isinstance(problem, TooLarge):
        return Reading(Verdict.RELAY, cause=Cause.SIZE)
    if isinstance(problem, Refused):
        if problem.stage == "mail" and problem.code >= 500:
            return Reading(Verdict.RELAY, cause=Cause.SENDER)  # about us, whatever it says
        if problem.stage == "greeting":
            return Reading(Verdict.TRANSIENT)  # a relay not taking connections now
        return read_reply(problem.code, problem.text, problem.stage)
    return Reading(Verdict.TRANSIENT)  # Lost, and anything else a connection raises


def check_size(connection: Connection, wire: bytes) -> None:
    """Refuse before DATA what the relay said it will refuse (it would 552 everyone)."""
    limit = connection.size_limit
    if limit and len(wire) > limit:
        raise TooLarge(
            f"the message is {len(wire):,} bytes; the relay accepts at most {limit:,} (SIZE)"
        )


def describe(problem: BaseException) -> str:
    """A short reason for the ledger and messages (never includes credentials)."""
    text = str(problem) or type(problem).__name__
    return text if len(text) < 300 else text[:300] + "…"


# -- aiosmtplib -------------------------------------------------------------------------------


@contextlib.contextmanager
def _mapped(stage: str) -> Iterator[None]:
    """aiosmtplib's and the network's exceptions, as ours (the only such table)."""
    try:
        yield
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise AuthFailed(exc.code, exc.message, "auth") from None
    except aiosmtplib.SMTPResponseException as exc:
        if _is_tls_failure(exc):
            raise TlsFailed(describe(exc)) from None
        raise Refused(exc.code, exc.message, stage) from None
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        if _is_tls_failure(exc):
            raise TlsFailed(describe(exc)) from None
        raise Lost(describe(exc)) from None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _is_tls_failure(exc: BaseException) -> bool:
    for link in _chain(exc):
        if isinstance(link, ssl.SSLError | ssl.CertificateError):
            return True
        if isinstance(link, aiosmtplib.SMTPException) and "STARTTLS" in str(link).upper():
            return True
    return False


class TokenRefused(SmtpProblem):
    """No OAuth2 token, or the relay refused a fresh one: a setting must change."""


class AioSmtpConnection:
    """:class:`Connection` over aiosmtplib, with its connection settings from Settings.

    With ``tokens`` (MAILER_SMTP_AUTH=xoauth2) it signs in with SASL XOAUTH2; a
    connection whose token has expired reports itself closed, so the sender opens
    a new one with a fresh token instead of finding out mid-message.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        tls: ssl.SSLContext | None,
        tokens: TokenSource | None = None,
        *,
        wire_data: bool = True,
    ) -> None:
        """``wire_data``: send DATA through :func:`_wire_data` (messages are in wire form
        already) when this aiosmtplib allows it; False: aiosmtplib's public ``data()``."""
        s = settings
        self.wire_data = wire_data
        by_password = s.sign_in == "password"
        password = s.password.get_secret_value() if s.password is not None else None
        self.timeout = s.timeout
        self.mailbox = s.username or ""
        self.tokens = tokens
        self._token: Token | None = None
        self._smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            validate_certs=s.security != "none",
            tls_context=tls,
            username=s.username if by_password else None,
            password=password,
        )

    @property
    def is_open(self) -> bool:
        token, tokens = self._token, self.tokens
        if token is not None and tokens is not None and tokens.clock() >= token.renew_at:
            return False  # signed in with a token about to expire: open a new session
        return bool(self._smtp.is_connected)

    @property
    def size_limit(self) -> int:
        advertised = self._smtp.esmtp_extensions.get("size", "")
        return int(advertised) if advertised.strip().isdigit() else 0

    async def open(self) -> None:
        with _mapped("greeting"):
            await self._smtp.connect()
        if self.tokens is not None:
            await self._sign_in_by_token()

    async def _sign_in_by_token(self) -> None:
        """AUTH XOAUTH2; a refused token is renewed once, then the run stops.

        ``AUTH XOAUTH2``, the token after the server's 334; a refusing server may
        answer a second 334 with a base64 JSON error and wait for an empty line
        before its 535 (Google and Microsoft do). aiosmtplib has no XOAUTH2, so
        the exchange is written here.
        """
        assert self.tokens is not None
        reply: aiosmtplib.SMTPResponse | None = None
        for _ in range(2):
            try:
                token = await self.tokens.token()
            except TokenUnavailable as exc:
                raise TokenRefused(f"no OAuth2 token: {exc}") from None
            with _mapped("auth"):
                if self._smtp.is_ehlo_or_helo_needed:
                    await self._smtp.ehlo()
                # RFC 4954 §4: a 2 KB token as an initial response would exceed the
                # command line limit (Postfix refuses it); as Microsoft documents,
                # the token goes after the server's 334.
                reply = await self._smtp.execute_command(b"AUTH", b"XOAUTH2")
                if reply.code == 334:
                    reply = await self._smtp.execute_command(xoauth2(self.mailbox, token))
                if reply.code == 334:  # the error, in base64 JSON: answer with an empty line
                    reply = await self._smtp.execute_command(b"")
            if reply.code == 235:
                self._token = token
                return
            self.tokens.refused(token)
        assert reply is not None
        raise TokenRefused(
            f"the relay refused a fresh OAuth2 token for {self.mailbox} ({reply.code} "
            f"{reply.message}); check that MAILER_SMTP_USERNAME is the sending mailbox, that the "
            "application may send as it (Add-MailboxPermission … FullAccess) and that SMTP AUTH "
            "is enabled for it (Set-CASMailbox -SmtpClientAuthenticationDisabled $false)."
        )

    async def envelope(self, sender: str, recipient: str) -> None:
        """MAIL FROM and RCPT TO for addresses validated at load time (ASCII, no CR/LF).

        aiosmtplib's ``mail()`` and ``rcpt()`` re-parse each address with
        ``email.utils`` (~60 µs a message); these are sent as they are.
        """
        smtp = self._smtp
        with _mapped("mail"):
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            # RFC 3461: a relay offering DSN returns only the headers of a bounced
            # message, so reports stay small (our Message-ID is in the headers).
            ret = b" RET=HDRS" if smtp.supports_extension("dsn") else b""
            mail = b"MAIL FROM:<" + sender.encode("ascii") + b">" + ret
            reply = await smtp.execute_command(mail)
        if reply.code != 250:
            raise Refused(reply.code, reply.message, "mail")
        with _mapped("rcpt"):
            reply = await smtp.execute_command(b"RCPT TO:<" + recipient.encode("ascii") + b">")
        if reply.code not in (250, 251):
            raise Refused(reply.code, reply.message, "rcpt")

    async def data(self, wire: bytes) -> tuple[int, str]:
        with _mapped("data"):
            if self.wire_data and wire_data_supported(self._smtp):
                reply = await _wire_data(self._smtp, wire, self.timeout)
            else:
                reply = await self._smtp.data(unstuff(wire))
        if reply.code != 250:
            raise Refused(reply.code, reply.message, "data")
        return reply.code, reply.message

    async def reset(self) -> None:
        try:
            await self._smtp.rset()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            self._smtp.close()

    async def quit(self) -> None:
        try:
            if self._smtp.is_connected:
                await self._smtp.quit(timeout=5)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
        finally:
            self._smtp.close()

    def close(self) -> None:
        self._smtp.close()


def unstuff(wire: bytes) -> bytes:
    """The message of a wire form (for aiosmtplib's public ``data()``, which stuffs it)."""
    body = wire.removesuffix(b".\r\n")
    body = body.replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


# -- DATA in wire form ---------------------------------------------------------------------------
#
# aiosmtplib's public data() normalizes line ends and dot-stuffs every message with
# two regular expressions over the whole message; ours are in wire form already
# (CRLF, stuffed, ending in CRLF.CRLF). _wire_data takes the steps of aiosmtplib
# 5.1's execute_data_command (under its command lock: DATA, the 354, the message,
# the reply) without that re-encoding, through two private attributes of its
# protocol (_command_lock, _response_pending) checked on every call, with the
# public data() as the fallback. tests/test_smtp.py compares the bytes on the wire
# and the replies of both paths on a real aiosmtpd, and fails loudly when a new
# aiosmtplib drops those attributes.
#
# Kept because it pays, measured with bench/send.py (smtp-sink on 127.0.0.1, 8
# connections, ~23 KB messages, end to end), 2026-11-30:
#   5,000 readers: 2,429–2,457 messages/s in wire form, 1,587–1,604 public (+51–55%)
#  20,000 readers: 2,919 messages/s in wire form, 1,829 public (+60%)


def wire_data_supported(smtp: aiosmtplib.SMTP) -> bool:
    """Whether this aiosmtplib still has the protocol internals _wire_data uses."""
    protocol = smtp.protocol
    return (
        protocol is not None
        and getattr(protocol, "_command_lock", None) is not None
        and hasattr(protocol, "_response_pending")
        and hasattr(protocol, "read_response")
        and hasattr(protocol, "write")
    )


async def _wire_data(smtp: aiosmtplib.SMTP, wire: bytes, timeout: float) -> aiosmtplib.SMTPResponse:
    """DATA with the message already in wire form: aiosmtplib 5.1's
    ``execute_data_command`` without its re-encoding (one lock for DATA, the 354,
    the message and the reply, as there)."""
    protocol = smtp.protocol
    assert protocol is not None and protocol._command_lock is not None
    try:
        async with protocol._command_lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            protocol.write(wire)
            response = await protocol.read_response(timeout=timeout)
            if response.code != 250:  # as execute_data_command: mapped like the public path
                raise aiosmtplib.SMTPDataError(response.code, response.message)
            return response
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()  # as the public data() does
        raise
