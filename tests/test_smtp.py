"""The sending core behind its small interface: rules proven against a fake connection
in milliseconds, and the aiosmtplib connection proven against a real server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailer import pipeline, smtp
from mailer.compose import OutgoingMessage
from mailer.delivery import Report, RetryPolicy, Sender
from mailer.errors import DeliveryError
from mailer.replies import Cause, Verdict

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, make_settings
from .helpers import settings_for
from .smtp_server import Behaviour, Server

QUICK = RetryPolicy(attempts=3, base=0.001, factor=2, jitter=0.0)


@dataclass
class Script:
    """What the fake relay does: per recipient, one action per try ("ok" once they run out)."""

    per_recipient: dict[str, list[object]] = field(default_factory=dict)
    on_open: list[object] = field(default_factory=list)
    size_limit: int = 0
    opened: int = 0
    delivered: list[str] = field(default_factory=list)


class FakeConnection:
    """A :class:`smtp.Connection` that follows a :class:`Script`; no network."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.open_now = False
        self.recipient = ""

    @property
    def is_open(self) -> bool:
        return self.open_now

    @property
    def size_limit(self) -> int:
        return self.script.size_limit

    async def open(self) -> None:
        self.script.opened += 1
        if self.script.on_open:
            action = self.script.on_open.pop(0)
            if isinstance(action, smtp.SmtpProblem):
                raise action
        self.open_now = True

    async def envelope(self, sender: str, recipient: str) -> None:
        self.recipient = recipient
        actions = self.script.per_recipient.get(recipient, [])
        action = actions.pop(0) if actions else "ok"
        if isinstance(action, smtp.Lost):
            self.open_now = False
        if isinstance(action, smtp.SmtpProblem):
            raise action

    async def data(self, wire: bytes) -> tuple[int, str]:
        self.script.delivered.append(self.recipient)
        return 250, "2.0.0 Ok"

    async def reset(self) -> None:
        pass

    async def quit(self) -> None:
        self.open_now = False

    def close(self) -> None:
        self.open_now = False


@pytest.fixture(scope="module")
def messages() -> list[OutgoingMessage]:
    job = pipeline.prepare(SAMPLE, make_settings(), recipients_dir=SAMPLE_RECIPIENTS)
    return list(job.messages())


def _run(script: Script, messages: list[OutgoingMessage], policy: RetryPolicy = QUICK) -> Report:
    settings = make_settings(max_connections=2, smtp_security="none")
    sender = Sender(settings, None, policy=policy, connect=lambda: FakeConnection(script))

    def stream() -> Iterator[OutgoingMessage]:
        yield from messages

    return asyncio.run(sender.run(stream(), lambda _: 0))


def test_a_temporary_refusal_is_retried_until_sent(messages: list[OutgoingMessage]) -> None:
    first = messages[0].recipient.email
    later = smtp.Refused(451, "4.3.0 Try again later", "rcpt")
    script = Script({first: [later, later]})
    report = _run(script, messages)
    assert report.total.sent == len(messages) and script.delivered.count(first) == 1


def test_temporary_refusals_beyond_the_last_try_are_deferred(
    messages: list[OutgoingMessage],
) -> None:
    first = messages[0].recipient.email
    script = Script({first: [smtp.Refused(451, "4.3.0 later", "rcpt")] * 5})
    report = _run(script, messages)
    assert report.total.deferred == 1 and first not in script.delivered
    assert report.total.sent == len(messages) - 1


def test_a_dropped_connection_reconnects_and_sends(messages: list[OutgoingMessage]) -> None:
    first = messages[0].recipient.email
    script = Script({first: [smtp.Lost("connection reset")]})
    report = _run(script, messages)
    assert report.total.sent == len(messages) and script.opened >= 2


def test_a_relay_asking_to_slow_down_gets_fewer_connections_and_no_try_is_used(
    messages: list[OutgoingMessage],
) -> None:
    first = messages[0].recipient.email
    throttle = smtp.Refused(421, "4.7.0 Too many messages, slow down", "rcpt")
    busy = smtp.Refused(451, "4.3.2 Concurrent connections limit exceeded", "rcpt")
    script = Script({first: [throttle, busy]})
    settings = make_settings(max_connections=3, smtp_security="none")
    one_try = RetryPolicy(attempts=1, base=0.001, jitter=0.0)  # no retries at all
    sender = Sender(settings, None, policy=one_try, connect=lambda: FakeConnection(script))
    report = asyncio.run(sender.run(iter(messages), lambda _: 0))
    assert report.total.sent == len(messages) and script.delivered.count(first) == 1
    assert sender.allowed_connections == 1  # one fewer for each "slow down"


def test_the_pause_rule_stops_after_six_transient_replies_in_a_row(
    messages: list[OutgoingMessage],
) -> None:
    """The rule alone, against the scripted connection (test_delivery proves it on a relay)."""
    busy = smtp.Refused(421, "4.7.0 Try later", "rcpt")
    script = Script({m.recipient.email: [busy] * 9 for m in messages})
    policy = RetryPolicy(attempts=3, base=0.001, jitter=0.0, max_consecutive_transient=6)
    report = _run(script, messages, policy)
    assert report.stopped is not None and "paused" in report.stopped
    assert report.total.sent == 0


def test_a_refused_login_stops_everything_with_exit_code_2(
    messages: list[OutgoingMessage],
) -> None:
    script = Script(on_open=[smtp.AuthFailed(535, "5.7.8 Authentication failed", "auth")] * 4)
    with pytest.raises(DeliveryError) as raised:
        _run(script, messages)
    assert raised.value.exit_code == 2 and "MAILER_SMTP_PASSWORD" in str(raised.value)
    assert script.delivered == []


def test_the_same_unexplained_refusal_in_a_row_is_the_relay(
    messages: list[OutgoingMessage],
) -> None:
    refused = smtp.Refused(550, "Rejected", "rcpt")
    script = Script({m.recipient.email: [refused] for m in messages})
    with pytest.raises(DeliveryError) as raised:
        _run(script, messages)
    report = raised.value.report
    assert isinstance(report, Report) and report.total.failed == 0
    assert "same refusal for 5 recipients in a row" in str(raised.value)


@pytest.mark.parametrize(
    ("problem", "verdict", "cause"),
    [
        (smtp.AuthFailed(535, "5.7.8 bad credentials", "auth"), Verdict.FATAL, None),
        (smtp.TlsFailed("certificate verify failed"), Verdict.FATAL, None),
        (smtp.Lost("timed out"), Verdict.TRANSIENT, None),
        (smtp.TooLarge("too big"), Verdict.RELAY, Cause.SIZE),
        (smtp.Refused(421, "4.3.2 shutting down", "greeting"), Verdict.TRANSIENT, None),
        (smtp.Refused(550, "5.1.1 unknown", "mail"), Verdict.RELAY, Cause.SENDER),
        (smtp.Refused(451, "4.1.8 try later", "mail"), Verdict.TRANSIENT, None),
        (smtp.Refused(421, "4.7.0 slow down", "rcpt"), Verdict.SLOW_DOWN, None),
        (smtp.Refused(451, "4.3.2 concurrent connections", "mail"), Verdict.SLOW_DOWN, None),
        (smtp.Refused(550, "5.1.1 unknown", "rcpt"), Verdict.FAILED, None),
        (smtp.Refused(552, "5.3.4 too big", "data"), Verdict.RELAY, Cause.SIZE),
        (smtp.Refused(554, "5.7.1 spam", "data"), Verdict.RELAY, Cause.POLICY),
    ],
)
def test_one_table_classes_every_problem(
    problem: smtp.SmtpProblem, verdict: Verdict, cause: Cause | None
) -> None:
    reading = smtp.classify(problem)
    assert reading.verdict is verdict and reading.cause == cause


# -- the real connection -----------------------------------------------------------------------


def test_this_aiosmtplib_still_has_what_wire_data_needs(server: Server, tmp_path: Path) -> None:
    """Fails loudly when a new aiosmtplib drops the internals _wire_data uses (the
    public path is used then: correct, and slower; see smtp.py for the figures)."""

    async def probe() -> bool:
        connection = smtp.AioSmtpConnection(settings_for(server.port, tmp_path).smtp, None)
        await connection.open()
        try:
            return smtp.wire_data_supported(connection._smtp)
        finally:
            await connection.quit()

    assert asyncio.run(probe()), "aiosmtplib changed: update smtp._wire_data or drop it"


async def _through_a_tap(
    port: int, settings_path: Path, wire_data: bool, messages: list[tuple[str, bytes]]
) -> tuple[bytes, list[tuple[int, str]]]:
    """Send ``messages`` through a TCP tap in front of the server: the bytes the client
    put on the wire, and the server's reply to each DATA (code, text)."""
    sent = bytearray()

    async def tap(client: asyncio.StreamReader, back: asyncio.StreamWriter) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, log: bool) -> None:
            while data := await source.read(65536):
                if log:
                    sent.extend(data)
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pump(client, writer, True), pump(reader, back, False))

    relay = await asyncio.start_server(tap, "127.0.0.1", 0)
    tap_port = relay.sockets[0].getsockname()[1]
    settings = settings_for(tap_port, settings_path)
    connection = smtp.AioSmtpConnection(settings.smtp, None, wire_data=wire_data)
    replies: list[tuple[int, str]] = []
    await connection.open()
    for recipient, wire in messages:
        await connection.envelope("news@isu.example.org", recipient)
        try:
            replies.append(await connection.data(wire))
        except smtp.Refused as refused:
            replies.append((refused.code, refused.text))
            await connection.reset()
    await connection.quit()
    relay.close()
    await relay.wait_closed()
    return bytes(sent), replies


def test_wire_data_puts_the_same_bytes_on_the_wire_as_the_public_path(tmp_path: Path) -> None:
    """Byte for byte what aiosmtplib's public data() sends, and the same replies (a 250,
    and a 451 at DATA), for real messages and one with lines starting with dots."""
    job = pipeline.prepare(SAMPLE, settings_for(1, tmp_path / "job"), dry_run=False)
    composed = [(m.to, m.wire()) for m in itertools.islice(job.messages(), 3)]
    dots = b"Subject: dots\r\n\r\n..leading dot\r\n...two\r\nend\r\n.\r\n"
    messages = [*composed, ("dots@example.org", dots), ("later@example.org", dots)]
    results = []
    for wire_data in (True, False):
        with Server(Behaviour(defer_times={"later@example.org": 1})) as server:
            results.append(
                asyncio.run(
                    _through_a_tap(server.port, tmp_path / str(wire_data), wire_data, messages)
                )
            )
            received = [r.data for r in server.received]
        assert b"\r\n.leading dot\r\n..two\r\n" in received[-1]  # unstuffed by the server
    (fast_bytes, fast_replies), (public_bytes, public_replies) = results
    assert fast_replies[-1][0] == 451 and [code for code, _ in fast_replies[:-1]] == [250] * 4
    assert fast_replies == public_replies
    assert fast_bytes.count(b"\r\nDATA\r\n") == 5 and fast_bytes == public_bytes


@pytest.mark.parametrize("body", [b"a\r\n.b\r\n", b".start\r\n..two\r\nend\r\n", b"plain\r\n"])
def test_unstuff_undoes_dot_stuffing(body: bytes) -> None:
    lines = body.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    assert smtp.unstuff(stuffed + b".\r\n") == body
