"""Deliver: the SMTP sink of the message stream.

A pool of ``MAILER_MAX_CONNECTIONS`` persistent SMTP connections (``smtp.py``) takes
messages from a small bounded queue (so composing never runs far ahead of
sending), under one global rate limit. Replies are classed the way a mail
engineer would:

- 2xx to DATA: **sent**;
- 5xx to RCPT or DATA about the mailbox: **failed** for that recipient;
- 4xx, a timeout or a dropped connection: transient; retried in this run with
  exponential backoff and jitter, then left **deferred** for the next run;
- authentication or TLS failure, a sender the relay refuses, or a relay that
  refuses every connection: the run stops at once (:class:`DeliveryError`).

What a reply means is decided in one table (``replies.py``). A refusal about
the relay, the sender or the message (policy, quota, size; or the same refusal
for ``RELAY_STREAK`` recipients in a row) stops the run with advice: those
recipients are recorded ``held`` (pending), never failed or suppressed.

Every attempt is in the ledger *before* its DATA and every outcome after it;
the next message on a connection starts only once the previous outcome is
durable (see ``ledger.py``).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailer import smtp
from mailer.compose import OutgoingMessage
from mailer.errors import DeliveryError
from mailer.ledger import Ledger, Outcome, Record
from mailer.oauth import TokenSource
from mailer.quota import Clock, Quota, QuotaReached, ledger_history
from mailer.replies import ADVICE, Cause, Reading, Verdict, enhanced_code, read_reply
from mailer.settings import Settings
from mailer.smtp import Connection, ConnectionFactory

# The same unexplained 5xx (no enhanced code naming the mailbox) for this many
# recipients in a row, with no success between, is the relay refusing us, not
# that many dead mailboxes (a misconfigured relay answers "550 relay not permitted").
RELAY_STREAK = 5
# After the relay itself says its quota is used up: when the summary says to try again.
RELAY_QUOTA_PAUSE = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a message within one run (defaults: 2, 6, 18 s ≈ 26 s, ±25%)."""

    attempts: int = 4
    base: float = 2.0
    factor: float = 3.0
    jitter: float = 0.25
    # Transient failures in a row (no success between) that pause the run.
    max_consecutive_transient: int = 50
    # Failed connection attempts, with none ever succeeding, that stop the run.
    max_connect_failures: int = 3

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        nominal = self.base * self.factor ** (attempt - 1)
        return nominal * random.uniform(1 - self.jitter, 1 + self.jitter)


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


@dataclass
class Tally:
    """Outcomes of this run, per segment and in all."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0


@dataclass
class Report:
    """What a run did; the CLI prints it and picks the exit code from it."""

    per_segment: dict[str, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)
    in_doubt: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early, if it did
    paused_until: float | None = None  # stopped at a quota: when sending can resume
    failures: list[Record] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # dead mailboxes added to suppressions
    # Dead mailboxes not suppressed because there were more than one run may
    # suppress (pipeline.suppression_cap); --allow-mass-suppression takes them.
    suppression_withheld: list[str] = field(default_factory=list)

    def count(self, message: OutgoingMessage, outcome: str, step: int = 1) -> None:
        for segment in message.recipient.segments:
            tally = self.per_segment.setdefault(segment, Tally())
            setattr(tally, outcome, getattr(tally, outcome) + step)
        setattr(self.total, outcome, getattr(self.total, outcome) + step)

    @property
    def met_trouble(self) -> bool:
        """Whether this run met a failure, a deferral or a stop (exit code 1)."""
        return bool(self.total.failed or self.total.deferred or self.stopped)

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.total.failed == 0 and self.total.deferred == 0


@dataclass
class _Item:
    message: OutgoingMessage
    attempt: int  # numbered across runs, from the ledger
    last: int  # the last attempt this run may make


class _Fatal(Exception):
    """Internal: stop the whole run; ``configuration`` when a setting must change."""

    def __init__(
        self, message: str, *, configuration: bool = True, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.configuration = configuration
        self.code = code


_SENTINEL: Any = None
Progress = Callable[[str, OutgoingMessage], None]


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
    ) -> None:
        """``connect`` makes a connection (default: aiosmtplib to the settings' relay);
        ``clock`` is wall time for the quotas and the ledger (tests move it)."""
        self.settings = settings
        self.clock = clock
        limits = settings.limits
        self.quota = (
            Quota(
                limits,
                ledger_history(
                    settings.ledger_dir, clock() - max(limit.seconds for limit in limits)
                ),
                clock,
            )
            if limits
            else None
        )
        self.ledger = ledger
        self.policy = policy or RetryPolicy(base=settings.retry_delay)
        self.progress = progress or (lambda outcome, message: None)
        self.run_id = run_id
        self.report = Report()
        budget = settings.send_budget
        self._budget_end = clock() + budget.total_seconds() if budget is not None else None
        self.rate = RateLimit(settings.rate_per_second) if settings.rate_per_second else None
        self._stop: str | None = None
        self._stopping = asyncio.Event()  # set with _stop, for the run to wait on
        self._consecutive_transient = 0
        # Recent unexplained 5xx failures with one reply (see RELAY_STREAK).
        self._streak: list[tuple[OutgoingMessage, int]] = []
        self._streak_reply: tuple[int | None, tuple[int, int, int] | None] | None = None
        self._relay_reply: tuple[int | None, tuple[int, int, int] | None] | None = None
        self._connect_failures = 0
        self._ever_connected = False
        self._held_permits: list[asyncio.Task[bool]] = []
        # One verifying context for the run: building it loads the CA store (ms),
        # which a reconnect after every drop should not pay again.
        tls = ssl.create_default_context() if settings.smtp_security != "none" else None
        # One token source for every connection: a token is fetched once, not per session.
        self.tokens = TokenSource(settings) if settings.sign_in == "xoauth2" else None
        self.connect: ConnectionFactory = connect or (
            lambda: smtp.AioSmtpConnection(settings, tls, self.tokens)
        )

    def request_stop(self, reason: str) -> None:
        """Stop taking new messages; messages in flight finish (Ctrl-C, a pause)."""
        if self._stop is None:
            self._stop = reason
            self._stopping.set()

    # -- the run --------------------------------------------------------------------

    async def run(
        self, messages: Iterator[OutgoingMessage], attempts_before: Callable[[str], int]
    ) -> Report:
        """Send every message; ``attempts_before`` numbers attempts across runs."""
        workers = self.settings.max_connections
        self._permits = asyncio.Semaphore(workers)
        self.allowed_connections = workers
        queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        room = asyncio.Semaphore(workers * 2)  # back-pressure on the composer
        outstanding = [0]
        finished = asyncio.Event()

        def settle() -> None:
            outstanding[0] -= 1
            room.release()
            if outstanding[0] == 0 and producer.done():
                finished.set()

        async def produce() -> None:
            for message in messages:
                await room.acquire()
                if self._stop is not None:
                    room.release()
                    return
                outstanding[0] += 1
                attempt = attempts_before(message.recipient.email) + 1
                queue.put_nowait(_Item(message, attempt, attempt + self.policy.attempts - 1))

        waiting: dict[int, tuple[asyncio.TimerHandle, _Item]] = {}

        def retry_later(item: _Item) -> None:
            def due() -> None:
                waiting.pop(id(item), None)
                queue.put_nowait(item)

            delay = self.policy.delay(item.attempt - 1)
            waiting[id(item)] = (asyncio.get_running_loop().call_later(delay, due), item)

        def producer_done(_: object) -> None:
            if outstanding[0] == 0:
                finished.set()

        producer = asyncio.create_task(produce())
        producer.add_done_callback(producer_done)
        pool = [
            asyncio.create_task(self._worker(queue, settle, retry_later)) for _ in range(workers)
        ]
        watchers = [
            asyncio.create_task(finished.wait()),
            asyncio.create_task(self._stopping.wait()),
        ]
        try:
            await asyncio.wait([*watchers, *pool], return_when=asyncio.FIRST_COMPLETED)
        finally:
            producer.cancel()
            for task in (*watchers, *self._held_permits):
                task.cancel()
            for handle, item in waiting.values():  # retries not yet due stay deferred
                handle.cancel()
                self.report.count(item.message, Outcome.DEFERRED)
            for _ in pool:
                queue.put_nowait(_SENTINEL)
            results = await asyncio.gather(*pool, return_exceptions=True)
            if self.ledger is not None:
                await self.ledger.aclose()
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]  # e.g. a list changed mid-send
        self.report.stopped = self._stop
        for result in results:
            if isinstance(result, _Fatal):
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

    # -- one connection -------------------------------------------------------------

    async def _worker(
        self,
        queue: asyncio.Queue[_Item | None],
        settle: Callable[[], None],
        retry_later: Callable[[_Item], None],
    ) -> None:
        connection: Connection | None = None
        unsettled: list[asyncio.Future[None]] = []  # ledger records not yet durable
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if self._budget_end is not None and self.clock() >= self._budget_end:
                    self._budget_used_up()
                if self._stop is not None:
                    settle()  # left pending: no record, the next run sends it
                    continue
                # Before the connection check: a session whose sign-in is about to
                # expire is renewed after the wait, not used after it.
                if self.rate is not None:
                    await self.rate.wait()
                if self.quota is not None and not await self._quota_allows():
                    settle()  # left pending: no record, the next run sends it
                    continue
                async with self._permits:  # fewer at once after the relay said "slow down"
                    connection = await self._connected(connection, queue, item)
                    if connection is None:
                        continue
                    outcome = await self._send_one(connection, item, unsettled)
                if outcome == "slow":
                    self._slow_down()
                    await connection.quit()  # the relay wants fewer sessions
                    connection = None
                    retry_later(item)  # the same try again: a throttle does not use one up
                    continue
                if outcome == "retry":
                    retry_later(_Item(item.message, item.attempt + 1, item.last))
                    connection = connection if connection.is_open else None
                    continue
                settle()
                if not connection.is_open:
                    connection = None
        except BaseException as exc:  # _Fatal, a lost ledger, a bug: the others stop too
            self.request_stop(str(exc) or type(exc).__name__)
            raise
        finally:
            if connection is not None:
                await connection.quit()
            if unsettled:
                await asyncio.gather(*unsettled, return_exceptions=True)

    async def _connected(
        self, connection: Connection | None, queue: asyncio.Queue[_Item | None], item: _Item
    ) -> Connection | None:
        """A live connection, or None after putting ``item`` back for another try."""
        if connection is not None and connection.is_open:
            return connection
        if connection is not None:
            connection.close()  # after a drop: close before reconnecting
        fresh = self.connect()
        try:
            await fresh.open()
        except smtp.SmtpProblem as problem:
            fresh.close()
            if smtp.classify(problem).verdict is Verdict.FATAL:
                raise self._fatal(problem) from None
            self._connect_failures += 1
            if (
                not self._ever_connected
                and self._connect_failures >= self.policy.max_connect_failures
            ):
                raise _Fatal(
                    f"the relay {self.settings.smtp_host}:{self.settings.smtp_port} refused "
                    f"every connection ({smtp.describe(problem)}); nothing was sent.",
                    configuration=False,
                    code=getattr(problem, "code", None),
                ) from None
            self._transient()
            await asyncio.sleep(self.policy.delay(min(self._connect_failures, 3)) / 4)
            queue.put_nowait(item)
            return None
        self._ever_connected = True
        self._connect_failures = 0
        return fresh

    def _budget_used_up(self) -> None:
        """MAILER_SEND_BUDGET is spent: stop like a quota pause (exit 75, the rest
        pending), so a scheduled run ends cleanly before the CI job's time limit."""
        if self.report.paused_until is None:
            self.report.paused_until = self.clock()
        self.request_stop(
            "MAILER_SEND_BUDGET is used up; the rest stays pending and the next run "
            "(the scheduled workflow's, hourly) continues the send."
        )

    async def _quota_allows(self) -> bool:
        """Take a place in every quota window, or stop the run cleanly when one is full."""
        assert self.quota is not None
        try:
            taken = await self.quota.take(self._stopping)
        except QuotaReached as reached:
            if self.report.paused_until is None:
                self.report.paused_until = reached.resume_at
            self.request_stop(str(reached))
            return False
        return taken and self._stop is None

    def _slow_down(self) -> None:
        """One connection fewer (never below one) for the rest of the run."""
        if self.allowed_connections > 1:
            self.allowed_connections -= 1
            self._held_permits.append(asyncio.create_task(self._permits.acquire()))

    def _fatal(self, problem: smtp.SmtpProblem) -> _Fatal:
        """The run-stopping error for a refused login or a TLS failure."""
        where = f"{self.settings.smtp_host}:{self.settings.smtp_port}"
        if isinstance(problem, smtp.TokenRefused):
            return _Fatal(f"{problem} Nothing more was sent.")
        if isinstance(problem, smtp.AuthFailed):
            advice = (
                "the relay no longer accepts password sign-in (Basic authentication): set "
                "MAILER_SMTP_AUTH=xoauth2 and the MAILER_OAUTH_* settings (README, 'Microsoft 365')"
                if _basic_auth_retired(problem.text)
                else "check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD"
            )
            return _Fatal(
                f"the relay refused the login ({problem.code} {problem.text}); {advice}. "
                "Nothing more was sent.",
                code=problem.code,
            )
        return _Fatal(f"TLS with {where} failed ({smtp.describe(problem)}); nothing more was sent.")

    async def _send_one(
        self, connection: Connection, item: _Item, unsettled: list[asyncio.Future[None]]
    ) -> str:
        """One try of one message; returns its outcome or ``retry``.

        The fsync of this attempt's record (and of the connection's previous
        outcome) overlaps MAIL and RCPT; DATA waits until both are durable. So a
        crash leaves at most one message a connection delivered but not recorded,
        and that one has its attempt on disk: it is reported in doubt.
        """
        message = item.message
        self._record(message, Outcome.ATTEMPT, item.attempt, unsettled=unsettled)
        code: int | None
        reading: Reading | None = None
        try:
            await connection.envelope(message.envelope_from, message.to)
            wire = await _wire(message)
            await self._settle(unsettled)
            smtp.check_size(connection, wire)
            code, text = await connection.data(wire)
        except smtp.SmtpProblem as problem:
            code = problem.code if isinstance(problem, smtp.Refused) else None
            text = problem.text if isinstance(problem, smtp.Refused) else smtp.describe(problem)
            reading = smtp.classify(problem)
            if isinstance(problem, smtp.Lost):
                connection.close()
            elif connection.is_open:
                await connection.reset()
            if reading.verdict is Verdict.FATAL:
                self._record(message, Outcome.HELD, item.attempt, code, text, unsettled)
                raise self._fatal(problem) from None
        reading = reading or read_reply(code, text, "data")
        if reading.verdict is Verdict.RELAY:
            self._record(message, Outcome.HELD, item.attempt, code, text, unsettled)
            if reading.cause is Cause.QUOTA:
                # The relay's own quota (Exchange's 5.1.90, SubmissionQuotaExceeded):
                # a pause, like our own windows; the next (scheduled) run tries again.
                if self.report.paused_until is None:
                    self.report.paused_until = self.clock() + RELAY_QUOTA_PAUSE
                self.request_stop(
                    f"the relay says its sending quota is used up ('{code or ''} {text}'); "
                    "the rest stays pending. Try again later (the scheduled workflow does, "
                    "hourly); Exchange Online's daily limit is counted over 24 hours."
                )
                return str(Outcome.HELD)
            raise self._relay_stop(message, reading.cause or Cause.RELAY, code, text)
        if reading.verdict is Verdict.SENT:
            outcome = Outcome.SENT
            self._streak.clear()
        elif reading.verdict is Verdict.FAILED:
            outcome = Outcome.FAILED
            if not reading.mailbox_gone and self._relay_reply == (code, enhanced_code(text)):
                # In flight when a streak stopped the run: the relay's refusal too.
                self._record(message, Outcome.HELD, item.attempt, code, text, unsettled)
                return str(Outcome.HELD)
        elif reading.verdict is Verdict.SLOW_DOWN and self._stop is None:
            self._transient()  # bounded: a relay that never stops throttling pauses the run
            self._record(message, Outcome.DEFERRED, item.attempt, code, text, unsettled)
            return "slow"
        else:
            self._transient()
            outcome = Outcome.DEFERRED
            if item.attempt < item.last and self._stop is None:
                self._record(message, outcome, item.attempt, code, text, unsettled)
                return "retry"
        self._finish(message, outcome, item.attempt, code, text, unsettled)
        if outcome is Outcome.FAILED and not reading.mailbox_gone:
            self._unexplained(message, item.attempt, code, text, unsettled)
        return outcome

    def _unexplained(
        self,
        message: OutgoingMessage,
        attempt: int,
        code: int | None,
        text: str,
        unsettled: list[asyncio.Future[None]],
    ) -> None:
        """Count a 5xx that does not name the mailbox; a streak of one reply is the relay.

        The streak's recipients were recorded failed; they are recorded ``held``
        (pending) after it, so nobody stays failed for the relay's refusal.
        """
        key = (code, enhanced_code(text))
        if key != self._streak_reply:
            self._streak.clear()
            self._streak_reply = key
        self._streak.append((message, attempt))
        if len(self._streak) < RELAY_STREAK:
            return
        streak, self._streak = self._streak, []
        self._relay_reply = key
        held = {m.recipient.email for m, _ in streak}
        for earlier, earlier_attempt in streak:
            self._record(earlier, Outcome.HELD, earlier_attempt, code, text, unsettled)
            self.report.count(earlier, Outcome.FAILED, -1)
        self.report.failures = [r for r in self.report.failures if r.recipient not in held]
        raise self._relay_stop(message, Cause.RELAY, code, text, streak=len(streak))

    def _relay_stop(
        self,
        message: OutgoingMessage,
        cause: Cause,
        code: int | None,
        text: str,
        *,
        streak: int = 0,
    ) -> _Fatal:
        """The run-stopping error for a refusal about the relay, the sender or the message."""
        reply = f"{code or ''} {text}".strip()
        seen = (
            f"the same refusal for {streak} recipients in a row ('{reply}')"
            if streak
            else f"'{reply}' for {message.recipient.email}"
        )
        return _Fatal(
            f"the relay refused our mail: {seen}. This is about the relay, the sender or the "
            f"message, not the mailboxes: nobody was marked failed or suppressed for it, and "
            f"they stay pending. To fix: {ADVICE[cause]}",
            code=code,
        )

    async def _settle(self, unsettled: list[asyncio.Future[None]]) -> None:
        """Wait until every record this connection handed to the ledger is durable."""
        if unsettled:
            pending, unsettled[:] = list(unsettled), []
            await asyncio.gather(*pending)

    def _finish(
        self,
        message: OutgoingMessage,
        outcome: str,
        attempt: int,
        code: int | None,
        text: str,
        unsettled: list[asyncio.Future[None]],
    ) -> None:
        if outcome != Outcome.DEFERRED:
            self._consecutive_transient = 0
        record = self._record(message, outcome, attempt, code, text, unsettled)
        self.report.count(message, outcome)
        if outcome != Outcome.SENT:
            self.report.failures.append(record)
        self.progress(outcome, message)

    def _transient(self) -> None:
        self._consecutive_transient += 1
        if self._consecutive_transient >= self.policy.max_consecutive_transient:
            self.request_stop(
                f"paused after {self._consecutive_transient} temporary failures in a row; "
                "the relay may be overloaded. Run the same command later to resume."
            )

    def _record(
        self,
        message: OutgoingMessage,
        outcome: str,
        attempt: int,
        code: int | None = None,
        text: str | None = None,
        unsettled: list[asyncio.Future[None]] | None = None,
    ) -> Record:
        """Hand a record to the ledger; its durability is awaited before the next DATA."""
        record = Record(
            recipient=message.recipient.email,
            outcome=outcome,
            message_id=message.message_id,
            segments=message.recipient.segments,
            attempt=attempt,
            code=code,
            reply=text,
            time=datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds"),
            run=self.run_id,
        )
        if self.ledger is not None and unsettled is not None:
            unsettled.append(self.ledger.append(record))
        return record


def _basic_auth_retired(text: str) -> bool:
    """Exchange Online's refusal of password sign-in (5.7.30, 5.7.139, "basic authentication")."""
    lowered = text.lower()
    return "5.7.30" in text or "5.7.139" in text or "basic authentication" in lowered


async def _wire(message: OutgoingMessage) -> bytes:
    """The message for DATA; a DKIM signature's RSA step runs in a thread (it releases
    the GIL), so a second core signs while this loop keeps the other connections busy."""
    pending = message.pending_signature()
    if pending is None:
        return message.wire()
    work, signer = pending
    signature = await asyncio.to_thread(signer.sign, work.payload)
    return message.wire(work.finish(signature))
