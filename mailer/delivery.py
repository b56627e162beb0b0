"""Deliver: the SMTP sink of the message stream, in three parts.

- :class:`~mailer.pool.Pool` (``pool.py``): a small bounded queue, up to
  ``MAILER_MAX_CONNECTIONS`` persistent SMTP connections (``smtp.py``), and the
  timers of retries within the run;
- :class:`~mailer.rulings.ReplyPolicy` (``rulings.py``): what each reply means
  for the recipient and for the run (sent, failed, retried, deferred, held; a
  streak of one refusal, too many temporary failures, a refused login);
- :class:`~mailer.recorder.Recorder` (``recorder.py``): the only writer of the
  ledger and of the run's report during a send.

:class:`Sender` wires them: it owns the gates every try passes (the send budget,
the global rate limit, the relay's quota windows) and sends one message on one
connection. Every attempt is in the ledger *before* its DATA and every outcome
after it: a connection's DATA waits until its previous outcome and its current
attempt are durable (the fsync overlaps MAIL and RCPT; see ``recorder.py``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator

from mailer import smtp
from mailer.compose import OutgoingMessage
from mailer.errors import DeliveryError
from mailer.ledger import Ledger
from mailer.oauth import TokenSource
from mailer.pool import Item, Pool, RetryPolicy
from mailer.quota import Clock, Quota, QuotaReached, ledger_history
from mailer.recorder import Journal, Progress, Recorder, Report
from mailer.replies import Reading, read_reply
from mailer.rulings import Action, ReplyPolicy, RunStop
from mailer.settings import Settings
from mailer.smtp import Connection, ConnectionFactory

__all__ = ["Progress", "Report", "RetryPolicy", "Sender"]

# Failed connection attempts after which the wait before the next stops growing.
CONNECT_BACKOFF_STEPS = 3


class RateLimit:
    """A global cap that holds exactly: evenly spaced starts, and never more than
    ``per_second`` starts in any one-second window."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self.recent: deque[float] = deque(maxlen=max(1, int(per_second)))
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            loop = asyncio.get_running_loop()
            start = max(loop.time(), self.next)
            if len(self.recent) == self.recent.maxlen:
                start = max(start, self.recent[0] + 1.0)
            delay = start - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            started = loop.time()
            self.recent.append(started)
            self.next = started + self.interval


class Sender:
    """Sends a stream of messages over a pool of connections, recording each outcome."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger | None,
        *,
        policy: RetryPolicy | None = None,
        progress: Progress | None = None,
        run_id: str | None = None,
        connect: ConnectionFactory | None = None,
        clock: Clock = time.time,
        quota: Quota | None = None,
    ) -> None:
        """``connect`` makes a connection (default: aiosmtplib to the settings' relay);
        ``clock`` is wall time for the quotas and the ledger (tests move it); ``quota``
        defaults to the settings' windows over the ledgers' history."""
        self.settings = settings
        self.clock = clock
        self.policy = policy or RetryPolicy(base=settings.retry_delay)
        self.quota = quota if quota is not None else _quota(settings, clock)
        self.recorder = Recorder(ledger, run_id=run_id, progress=progress, clock=clock)
        self.rulings = ReplyPolicy(
            max_consecutive_transient=self.policy.max_consecutive_transient,
            max_connect_failures=self.policy.max_connect_failures,
            relay=f"{settings.smtp_host}:{settings.smtp_port}",
        )
        budget = settings.send_budget
        self._budget_end = clock() + budget.total_seconds() if budget is not None else None
        self.rate = RateLimit(settings.rate_per_second) if settings.rate_per_second else None
        self.pool: Pool[OutgoingMessage] = Pool(
            settings.max_connections,
            self.policy,
            gate=self._gate,
            open_connection=self._open,
            send=self._send_one,
            journal=self.recorder.journal,
            abandoned=self.recorder.deferred_unsent,
        )
        # One verifying context for the run: building it loads the CA store (ms),
        # which a reconnect after every drop should not pay again.
        tls = ssl.create_default_context() if settings.smtp_security != "none" else None
        # One token source for every connection: a token is fetched once, not per session.
        self.tokens = TokenSource(settings.oauth) if settings.sign_in == "xoauth2" else None
        relay = settings.smtp
        self.connect: ConnectionFactory = connect or (
            lambda: smtp.AioSmtpConnection(relay, tls, self.tokens)
        )

    @property
    def report(self) -> Report:
        return self.recorder.report

    @property
    def allowed_connections(self) -> int:
        return self.pool.allowed_connections

    def request_stop(self, reason: str) -> None:
        """Stop taking new messages; messages in flight finish (Ctrl-C, a pause)."""
        self.pool.request_stop(reason)

    async def run(
        self, messages: Iterator[OutgoingMessage], attempts_before: Callable[[str], int]
    ) -> Report:
        """Send every message; ``attempts_before`` numbers attempts across runs."""
        try:
            results = await self.pool.run(
                messages, lambda message: attempts_before(message.recipient.email)
            )
        finally:
            await self.recorder.close()
        self.report.stopped = self.pool.stop_reason
        for result in results:
            if isinstance(result, RunStop):
                # Exit code 2 promises "nothing was sent": only when that is so.
                error = DeliveryError(
                    str(result),
                    configuration=result.configuration and self.report.total.sent == 0,
                    code=result.code,
                )
                error.report = self.report
                raise error from None
            if isinstance(result, BaseException):
                raise result
        return self.report

    # -- the gates every try passes -------------------------------------------------

    async def _gate(self) -> bool:
        """The send budget, the global rate, then the quota windows: False leaves the
        message pending (no record; the next run sends it)."""
        if self._budget_end is not None and self.clock() >= self._budget_end:
            self.report.pause(self.clock())
            self.request_stop(
                "MAILER_SEND_BUDGET is used up; the rest stays pending and the next run "
                "(the scheduled workflow's, hourly) continues the send."
            )
            return False
        if self.rate is not None:
            await self.rate.wait()
        if self.quota is None:
            return True
        try:
            taken = await self.quota.take(self.pool.stopping)
        except QuotaReached as reached:
            self.report.pause(reached.resume_at)
            self.request_stop(str(reached))
            return False
        return taken and self.pool.stop_reason is None

    # -- one connection, one message ------------------------------------------------

    async def _open(self) -> Connection | None:
        """A fresh connection, or None (after a short wait) when it may be tried again."""
        fresh = self.connect()
        try:
            await fresh.open()
        except smtp.SmtpProblem as problem:
            fresh.close()
            ruling = self.rulings.connection_failed(problem)
            if ruling.error is not None:
                raise ruling.error from None
            if ruling.stop is not None:
                self.request_stop(ruling.stop)
            # A quarter of the usual retry wait, growing with the failures (at most 18/4 s).
            failures = min(self.rulings.connect_failures, CONNECT_BACKOFF_STEPS)
            await asyncio.sleep(self.policy.delay(failures) / 4)
            return None
        self.rulings.connected()
        return fresh

    async def _send_one(
        self, connection: Connection, item: Item[OutgoingMessage], journal: Journal
    ) -> Action:
        """One try of one message: its attempt is durable before DATA (with the
        connection's previous outcome; the fsync overlaps MAIL and RCPT)."""
        message = item.message
        journal.attempt(message, item.attempt)
        problem: smtp.SmtpProblem | None = None
        reading: Reading | None = None
        code: int | None
        try:
            await connection.envelope(message.envelope_from, message.to)
            wire = await _wire(message)
            await journal.durable()
            smtp.check_size(connection, wire)
            code, text = await connection.data(wire)
        except smtp.SmtpProblem as caught:
            problem = caught
            code = caught.code if isinstance(caught, smtp.Refused) else None
            text = caught.text if isinstance(caught, smtp.Refused) else smtp.describe(caught)
            reading = smtp.classify(caught)
            if isinstance(caught, smtp.Lost):
                connection.close()
            elif connection.is_open:
                await connection.reset()
        ruling = self.rulings.judge(
            message.recipient.email,
            item.attempt,
            item.last,
            reading or read_reply(code, text, "data"),
            code,
            text,
            stopping=self.pool.stop_reason is not None,
            problem=problem,
        )
        if ruling.action.final:
            journal.finish(message, ruling.action.outcome, item.attempt, code, text)
        else:
            journal.note(message, ruling.action.outcome, item.attempt, code, text)
        if ruling.unfailed:
            journal.unfail(ruling.unfailed)
        if ruling.pause is not None:
            self.report.pause(self.clock() + ruling.pause)
        if ruling.stop is not None:
            self.request_stop(ruling.stop)
        if ruling.error is not None:
            raise ruling.error
        return ruling.action


def _quota(settings: Settings, clock: Clock) -> Quota | None:
    """The settings' quota windows, counted from what the ledgers sent within them."""
    limits = settings.limits
    if not limits:
        return None
    since = clock() - max(limit.seconds for limit in limits)
    return Quota(limits, ledger_history(settings.ledger_dir, since), clock)


async def _wire(message: OutgoingMessage) -> bytes:
    """The message for DATA; a DKIM signature's RSA step runs in a thread (it releases
    the GIL), so a second core signs while this loop keeps the other connections busy."""
    pending = message.pending_signature()
    if pending is None:
        return message.wire()
    work, signer = pending
    signature = await asyncio.to_thread(signer.sign, work.payload)
    return message.wire(work.finish(signature))
