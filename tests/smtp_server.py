"""A real SMTP server on 127.0.0.1 (aiosmtpd) that can accept, reject, defer, stall or drop.

Shared by every delivery test. It records what it received, when, and how many
connections were open at once.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    rcpt: str
    data: bytes
    at: float
    mail_from: str = ""

    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Behaviour:
    """What the server does, per recipient address (lower case)."""

    reject_rcpt: dict[str, str] = field(default_factory=dict)  # address -> "550 ..." reply
    reject_every_rcpt: str | None = None  # this reply to every RCPT (a misconfigured relay)
    defer_times: dict[str, int] = field(default_factory=dict)  # address -> 451s before a 250
    drop_times: dict[str, int] = field(default_factory=dict)  # address -> drops before a 250
    stall: dict[str, float] = field(default_factory=dict)  # address -> seconds before replying
    delay: float = 0.0  # every DATA takes this long
    dsn: bool = False  # offer DSN (RFC 3461) and accept RET= on MAIL
    on_first_data: Any = None  # called once (in the server's thread) at the first DATA


class Handler:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.mail_lines: list[str] = []  # every MAIL FROM argument, as the client sent it

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.behaviour.dsn:
            responses.insert(-1, "250-DSN")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.behaviour.reject_rcpt.get(address.lower()) or self.behaviour.reject_every_rcpt
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        address = envelope.rcpt_tos[0].lower()
        with self.lock:
            self.seen[address] += 1
            count = self.seen[address]
        b = self.behaviour
        if b.on_first_data is not None:
            action, b.on_first_data = b.on_first_data, None
            await asyncio.to_thread(action)
        if b.delay:
            await asyncio.sleep(b.delay)
        if address in b.stall:
            await asyncio.sleep(b.stall[address])
        if count <= b.drop_times.get(address, 0):
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()  # the connection drops before DATA is answered
            return "250 never seen"
        if count <= b.defer_times.get(address, 0):
            return "451 4.3.0 Try again later"
        content = envelope.original_content or b""
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                received = Received(rcpt, content, time.monotonic(), envelope.mail_from or "")
                self.received.append(received)
        return "250 2.0.0 Queued"


class CountingSMTP(SMTP):
    """Counts open connections, to prove the client's connection cap."""

    def __init__(self, handler: Any, tracker: ConnectionTracker, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.tracker = tracker

    def connection_made(self, transport: Any) -> None:
        self.tracker.opened()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tracker.closed()
        super().connection_lost(exc)

    async def smtp_MAIL(self, arg: str) -> None:
        handler = self.event_handler
        if isinstance(handler, Handler):
            handler.mail_lines.append(arg)
            if handler.behaviour.dsn:  # aiosmtpd knows no DSN parameters: take RET= off
                arg = re.sub(r"\s+RET=(HDRS|FULL)\b", "", arg, flags=re.IGNORECASE)
        await super().smtp_MAIL(arg)


class ConnectionTracker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.total = 0

    def opened(self) -> None:
        with self.lock:
            self.active += 1
            self.total += 1
            self.peak = max(self.peak, self.active)

    def closed(self) -> None:
        with self.lock:
            self.active -= 1

    def reset(self) -> None:
        with self.lock:
            self.peak = self.active
            self.total = 0


class Server(Controller):
    """aiosmtpd on 127.0.0.1 with a :class:`Handler` and connection counting."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        **smtp_kwargs: Any,
    ) -> None:
        self.handler_obj = Handler(behaviour or Behaviour())
        self.tracker = ConnectionTracker()
        self.smtp_kwargs = smtp_kwargs
        super().__init__(
            self.handler_obj, hostname="127.0.0.1", port=free_port(), ssl_context=implicit_tls
        )

    def factory(self) -> SMTP:
        return CountingSMTP(self.handler, self.tracker, **self.smtp_kwargs)

    def start(self) -> None:
        super().start()
        time.sleep(0.05)  # start() opened (and closed) one connection to itself
        self.tracker.reset()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler_obj.received

    def by_rcpt(self) -> Counter[str]:
        return Counter(r.rcpt.lower() for r in self.received)


def refusing_authenticator(*args: Any) -> AuthResult:
    return AuthResult(success=False, handled=False)


def accepting_authenticator(*args: Any) -> AuthResult:
    return AuthResult(success=True)


class GreetingRefuser:
    """A relay that answers every connection with 421 and hangs up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"421 4.3.2 Service not available, closing channel\r\n")
        await writer.drain()
        writer.close()

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop
        )
        self._server = future.result(5)

    def __enter__(self) -> GreetingRefuser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
