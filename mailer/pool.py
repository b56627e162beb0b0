"""The pool: a bounded queue of messages, ``size`` workers each holding one
persistent connection, and the timers of retries within the run.

The pool decides nothing about replies (``rulings.py``) and writes nothing
(``recorder.py``): it is handed a ``gate`` (the rate, the quota windows and the
send budget, asked before every try), a way to open a connection, and a way to
send one message; it acts on the :class:`~mailer.rulings.Action` each try
returns. Composing never runs far ahead of sending: at most ``2 × size``
messages are taken from the stream and not yet settled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from mailer.recorder import Journal
from mailer.rulings import Action
from mailer.smtp import Connection

T = TypeVar("T")


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


@dataclass
class Item(Generic[T]):
    """One message in the pool, with its attempt number (numbered across runs)."""

    message: T
    attempt: int  # numbered across runs (the ledger remembers earlier runs' tries)
    last: int  # the last attempt this run may make
    first: int = 0  # this run's first attempt (0: ``attempt``)

    def __post_init__(self) -> None:
        self.first = self.first or self.attempt

    def again(self) -> Item[T]:
        """The next try of the same message."""
        return Item(self.message, self.attempt + 1, self.last, self.first)


Gate = Callable[[], Awaitable[bool]]
Opener = Callable[[], Awaitable[Connection | None]]
SendOne = Callable[[Connection, "Item[T]", Journal], Awaitable[Action]]


class Pool(Generic[T]):
    """Runs ``send`` over up to ``size`` connections until the stream is done or a stop."""

    def __init__(
        self,
        size: int,
        retry: RetryPolicy,
        *,
        gate: Gate,
        open_connection: Opener,
        send: SendOne[T],
        journal: Callable[[], Journal],
        abandoned: Callable[[T], None],
    ) -> None:
        """``open_connection`` returns None when the connection failed and may be tried
        again (the item goes back to the queue); ``abandoned`` is told of every retry
        still waiting when the run ends (it stays deferred)."""
        self.size = size
        self.retry = retry
        self.gate = gate
        self.open_connection = open_connection
        self.send = send
        self.journal = journal
        self.abandoned = abandoned
        self.allowed_connections = size
        self.stop_reason: str | None = None
        self.stopping = asyncio.Event()  # set with stop_reason, for waits to end on
        self._permits = asyncio.Semaphore(size)
        self._held_permits: list[asyncio.Task[bool]] = []

    def request_stop(self, reason: str) -> None:
        """Stop taking new messages; messages in flight finish (Ctrl-C, a pause)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stopping.set()

    async def run(self, messages: Iterator[T], attempts_before: Callable[[T], int]) -> list[object]:
        """Send every message; returns what each worker ended with (None, or the
        exception that stopped it). The stream's own exception is raised."""
        queue: asyncio.Queue[Item[T] | None] = asyncio.Queue()
        room = asyncio.Semaphore(self.size * 2)  # back-pressure on the composer
        outstanding = [0]
        finished = asyncio.Event()
        waiting: dict[int, tuple[asyncio.TimerHandle, Item[T]]] = {}

        def settle() -> None:
            outstanding[0] -= 1
            room.release()
            if outstanding[0] == 0 and producer.done():
                finished.set()

        async def produce() -> None:
            for message in messages:
                await room.acquire()
                if self.stop_reason is not None:
                    room.release()
                    return
                outstanding[0] += 1
                attempt = attempts_before(message) + 1
                queue.put_nowait(Item(message, attempt, attempt + self.retry.attempts - 1))

        def retry_later(item: Item[T]) -> None:
            def due() -> None:
                waiting.pop(id(item), None)
                queue.put_nowait(item)

            # Counted within this run: a reader tried in earlier runs waits 2, 6, 18 s
            # again, not the 162 s and more of its fifth try overall.
            delay = self.retry.delay(item.attempt - item.first)
            waiting[id(item)] = (asyncio.get_running_loop().call_later(delay, due), item)

        def producer_done(_: object) -> None:
            if outstanding[0] == 0:
                finished.set()

        producer = asyncio.create_task(produce())
        producer.add_done_callback(producer_done)
        workers = [
            asyncio.create_task(self._worker(queue, settle, retry_later)) for _ in range(self.size)
        ]
        watchers = [
            asyncio.create_task(finished.wait()),
            asyncio.create_task(self.stopping.wait()),
        ]
        try:
            await asyncio.wait([*watchers, *workers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            producer.cancel()
            for task in (*watchers, *self._held_permits):
                task.cancel()
            for handle, item in waiting.values():  # retries not yet due stay deferred
                handle.cancel()
                self.abandoned(item.message)
            for _ in workers:
                queue.put_nowait(None)
            results = await asyncio.gather(*workers, return_exceptions=True)
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]  # e.g. a list changed mid-send
        return list(results)

    async def _worker(
        self,
        queue: asyncio.Queue[Item[T] | None],
        settle: Callable[[], None],
        retry_later: Callable[[Item[T]], None],
    ) -> None:
        connection: Connection | None = None
        journal = self.journal()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                # Before the connection check: a session whose sign-in is about to
                # expire is renewed after the wait, not used after it.
                if self.stop_reason is not None or not await self.gate():
                    settle()  # left pending: no record, the next run sends it
                    continue
                async with self._permits:  # fewer at once after the relay said "slow down"
                    connection = await self._connected(connection)
                    if connection is None:
                        queue.put_nowait(item)  # never tried: back in line
                        continue
                    action = await self.send(connection, item, journal)
                if action is Action.SLOW_DOWN:
                    self._slow_down()
                    await connection.quit()  # the relay wants fewer sessions
                    connection = None
                    retry_later(item)  # the same try again: a throttle does not use one up
                    continue
                if action is Action.RETRY:
                    retry_later(item.again())
                    connection = connection if connection.is_open else None
                    continue
                settle()
                if not connection.is_open:
                    connection = None
        except BaseException as exc:  # a stop, a lost ledger, a bug: the others stop too
            self.request_stop(str(exc) or type(exc).__name__)
            raise
        finally:
            if connection is not None:
                await connection.quit()
            await journal.close()

    async def _connected(self, connection: Connection | None) -> Connection | None:
        """A live connection, or None when a fresh one could not be opened (yet)."""
        if connection is not None and connection.is_open:
            return connection
        if connection is not None:
            connection.close()  # after a drop: close before reconnecting
        return await self.open_connection()

    def _slow_down(self) -> None:
        """One connection fewer (never below one) for the rest of the run."""
        if self.allowed_connections > 1:
            self.allowed_connections -= 1
            self._held_permits.append(asyncio.create_task(self._permits.acquire()))
