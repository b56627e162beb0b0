"""The sender's three parts, each alone and in milliseconds: the reply policy (pure),
the recorder (a real ledger on disk) and the pool (in-memory connections)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailer import pipeline, smtp
from mailer.compose import OutgoingMessage
from mailer.delivery import Sender
from mailer.ledger import Ledger, Outcome, ledger_path, read_records
from mailer.pool import Item, Pool, RetryPolicy
from mailer.recorder import Journal, Recorder
from mailer.replies import read_reply
from mailer.rulings import RELAY_QUOTA_PAUSE, RELAY_STREAK, Action, ReplyPolicy, Ruling

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, make_settings

# -- the reply policy -------------------------------------------------------------------


def judge(
    policy: ReplyPolicy,
    code: int | None,
    text: str,
    *,
    recipient: str = "a@example.org",
    attempt: int = 1,
    last: int = 4,
    stopping: bool = False,
) -> Ruling:
    """One try's ruling, the reply read by the real reply table."""
    reading = read_reply(code, text, "rcpt")
    return policy.judge(recipient, attempt, last, reading, code, text, stopping=stopping)


def test_a_dead_mailbox_fails_that_reader_and_the_run_goes_on() -> None:
    policy = ReplyPolicy()
    for index in range(RELAY_STREAK * 2):
        ruling = judge(policy, 550, "5.1.1 User unknown", recipient=f"r{index}@example.org")
        assert ruling == Ruling(Action.FAILED)


def test_one_unexplained_refusal_for_a_streak_of_readers_is_the_relay_refusing_us() -> None:
    policy = ReplyPolicy()
    rulings = [
        judge(policy, 550, "Rejected", recipient=f"r{index}@example.org", attempt=2)
        for index in range(RELAY_STREAK)
    ]
    assert [r.action for r in rulings] == [Action.FAILED] * RELAY_STREAK
    assert all(r.error is None for r in rulings[:-1])
    last = rulings[-1]
    assert last.error is not None and "the same refusal for 5 recipients" in str(last.error)
    assert last.unfailed == tuple((f"r{index}@example.org", 2) for index in range(RELAY_STREAK))
    # A message in flight when the streak stopped the run gets the same refusal: held.
    assert judge(policy, 550, "Rejected", recipient="late@example.org").action is Action.HELD


def test_a_delivery_or_another_reply_breaks_the_streak() -> None:
    policy = ReplyPolicy()
    for index in range(RELAY_STREAK - 1):
        judge(policy, 550, "Rejected", recipient=f"r{index}@example.org")
    assert judge(policy, 250, "2.0.0 Ok").action is Action.SENT
    after = [
        judge(policy, 550, "Rejected", recipient=f"s{index}@example.org")
        for index in range(RELAY_STREAK - 1)
    ]
    assert all(ruling.error is None for ruling in after)
    assert judge(policy, 554, "Not here").error is None  # another reply: a new streak
    assert judge(policy, 554, "Not here").error is None


def test_a_temporary_failure_is_retried_until_the_last_attempt_then_deferred() -> None:
    policy = ReplyPolicy()
    assert judge(policy, 451, "4.3.0 Try later", attempt=1, last=3).action is Action.RETRY
    assert judge(policy, 451, "4.3.0 Try later", attempt=2, last=3).action is Action.RETRY
    assert judge(policy, 451, "4.3.0 Try later", attempt=3, last=3).action is Action.DEFERRED
    assert judge(policy, None, "timed out", attempt=1, stopping=True).action is Action.DEFERRED


def test_a_throttle_slows_down_unless_the_run_is_stopping() -> None:
    policy = ReplyPolicy()
    text = "4.7.0 Too many connections, slow down"
    assert judge(policy, 421, text).action is Action.SLOW_DOWN
    assert judge(policy, 421, text, stopping=True).action is Action.DEFERRED


def test_too_many_temporary_failures_in_a_row_pause_the_run_and_an_answer_resets_them() -> None:
    policy = ReplyPolicy(max_consecutive_transient=3)
    assert judge(policy, 451, "busy").stop is None
    assert judge(policy, 451, "busy").stop is None
    assert judge(policy, 550, "5.1.1 User unknown").action is Action.FAILED  # resets
    assert judge(policy, 451, "busy").stop is None
    assert judge(policy, 451, "busy").stop is None
    stopped = judge(policy, 451, "busy")
    # The try that pauses the run is its last word on that reader: deferred, reported.
    assert stopped.action is Action.DEFERRED and "paused after 3 temporary failures" in (
        stopped.stop or ""
    )


def test_the_relays_quota_is_a_pause_and_its_policy_a_stop_with_advice() -> None:
    quota = judge(ReplyPolicy(), 550, "5.1.90 Your message can't be sent because you've reached")
    assert quota.action is Action.HELD and quota.error is None
    assert quota.pause == RELAY_QUOTA_PAUSE and "quota is used up" in (quota.stop or "")
    policy = judge(ReplyPolicy(), 550, "5.7.1 Client does not have permissions to send")
    assert policy.action is Action.HELD and policy.error is not None
    assert "nobody was marked failed" in str(policy.error)


def test_a_relay_refusing_every_connection_stops_the_run_only_before_any_succeeded() -> None:
    policy = ReplyPolicy(max_connect_failures=3)
    lost = smtp.Lost("connection refused")
    assert policy.connection_failed(lost).error is None
    assert policy.connection_failed(lost).error is None
    assert "refused every connection" in str(policy.connection_failed(lost).error)
    later = ReplyPolicy(max_connect_failures=3)
    later.connected()
    assert all(later.connection_failed(lost).error is None for _ in range(10))


def test_a_refused_login_stops_at_once_and_names_what_to_change() -> None:
    retired = smtp.AuthFailed(
        535, "5.7.139 Authentication unsuccessful, basic authentication", "auth"
    )
    ruling = ReplyPolicy().connection_failed(retired)
    assert ruling.error is not None and "MAILER_SMTP_AUTH=xoauth2" in str(ruling.error)
    wrong = smtp.AuthFailed(535, "5.7.8 Authentication credentials invalid", "auth")
    assert "MAILER_SMTP_PASSWORD" in str(ReplyPolicy().connection_failed(wrong).error)


# -- the recorder -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def messages() -> list[OutgoingMessage]:
    job = pipeline.prepare(SAMPLE, make_settings(), recipients_dir=SAMPLE_RECIPIENTS)
    return list(job.messages())[:6]


def test_the_recorder_writes_each_outcome_and_counts_only_final_ones(
    tmp_path: Path, messages: list[OutgoingMessage]
) -> None:
    async def run() -> Recorder:
        with Ledger(tmp_path, "2017-03") as ledger:
            recorder = Recorder(ledger, run_id="run-1", clock=lambda: 1_500_000_000.0)
            journal = recorder.journal()
            first, second, third = messages[:3]
            journal.attempt(first, 1)
            await journal.durable()
            journal.finish(first, Outcome.SENT, 1, 250, "ok")
            journal.attempt(second, 1)
            journal.note(second, Outcome.DEFERRED, 1, 451, "later")  # retried: not counted
            journal.finish(third, Outcome.FAILED, 1, 550, "5.1.1 unknown")
            await journal.close()
            await recorder.close()
        return recorder

    recorder = asyncio.run(run())
    report = recorder.report
    assert (report.total.sent, report.total.failed, report.total.deferred) == (1, 1, 0)
    assert [r.recipient for r in report.failures] == [messages[2].recipient.email]
    records = list(read_records(ledger_path(tmp_path, "2017-03")))
    assert [r.outcome for r in records] == ["attempt", "sent", "attempt", "deferred", "failed"]
    assert {r.run for r in records} == {"run-1"}
    assert records[0].time.startswith("2017-07-14T02:40:00.000")


def test_failures_that_were_the_relays_refusal_are_recorded_held_and_uncounted(
    tmp_path: Path, messages: list[OutgoingMessage]
) -> None:
    async def run() -> Recorder:
        with Ledger(tmp_path, "2017-03") as ledger:
            recorder = Recorder(ledger, clock=time.time)
            journal = recorder.journal()
            for message in messages[:3]:
                journal.finish(message, Outcome.FAILED, 2, 550, "Rejected")
            journal.unfail(tuple((m.recipient.email, 2) for m in messages[:2]))
            await journal.durable()
            await recorder.close()
        return recorder

    report = asyncio.run(run()).report
    assert report.total.failed == 1
    assert [r.recipient for r in report.failures] == [messages[2].recipient.email]
    state_outcomes = [r.outcome for r in read_records(ledger_path(tmp_path, "2017-03"))]
    assert state_outcomes == ["failed"] * 3 + ["held"] * 2


# -- the pool ---------------------------------------------------------------------------


class Memory:
    """In-memory connections: counts how many are open at once and how many were opened."""

    def __init__(self) -> None:
        self.open_now = 0
        self.most = 0
        self.opened = 0


class MemoryConnection:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.live = False

    @property
    def is_open(self) -> bool:
        return self.live

    @property
    def size_limit(self) -> int:
        return 0

    async def open(self) -> None:
        self.memory.opened += 1
        self.memory.open_now += 1
        self.memory.most = max(self.memory.most, self.memory.open_now)
        self.live = True

    async def envelope(self, sender: str, recipient: str) -> None:
        pass

    async def data(self, wire: bytes) -> tuple[int, str]:
        return 250, "ok"

    async def reset(self) -> None:
        pass

    async def quit(self) -> None:
        self.close()

    def close(self) -> None:
        if self.live:
            self.memory.open_now -= 1
        self.live = False


QUICK = RetryPolicy(attempts=3, base=0.001, factor=1, jitter=0)


def run_pool(
    count: int,
    script: dict[int, list[Action]],
    *,
    size: int = 3,
    gate_open: bool = True,
    stop_after: int | None = None,
    retry: RetryPolicy = QUICK,
    before: int = 0,
) -> tuple[list[tuple[int, int]], Memory, Pool[int], list[int]]:
    """Send messages 0…count-1; ``script`` gives each message's actions, try by try
    (SENT once they run out); ``stop_after`` tries, the run is asked to stop. Returns
    the tries (message, attempt) in order, the connections, the pool and the retries
    handed back unsent."""
    memory = Memory()
    tries: list[tuple[int, int]] = []
    abandoned: list[int] = []

    async def main() -> Pool[int]:
        async def opener() -> MemoryConnection:
            connection = MemoryConnection(memory)
            await connection.open()
            return connection

        async def gate() -> bool:
            return gate_open

        async def send(connection: smtp.Connection, item: Item[int], _: Journal) -> Action:
            await asyncio.sleep(0)  # let the other workers run
            tries.append((item.message, item.attempt))
            if stop_after is not None and len(tries) >= stop_after:
                pool.request_stop("enough")
            actions = script.get(item.message, [])
            return actions.pop(0) if actions else Action.SENT

        pool: Pool[int] = Pool(
            size,
            retry,
            gate=gate,
            open_connection=opener,
            send=send,
            journal=Recorder(None, clock=time.time).journal,
            abandoned=abandoned.append,
        )

        def stream() -> Iterator[int]:
            yield from range(count)

        await pool.run(stream(), lambda _: before)
        return pool

    pool = asyncio.run(main())
    return tries, memory, pool, abandoned


def test_the_pool_never_opens_more_connections_than_allowed_and_reuses_them() -> None:
    tries, memory, _, _ = run_pool(40, {}, size=3)
    assert sorted(message for message, _ in tries) == list(range(40))
    assert memory.most <= 3 and memory.opened == 3 and memory.open_now == 0


def test_a_retry_comes_back_with_the_next_attempt_and_a_throttle_with_the_same() -> None:
    script = {1: [Action.RETRY, Action.RETRY], 2: [Action.SLOW_DOWN]}
    tries, _, pool, _ = run_pool(4, script, size=3)
    assert [attempt for message, attempt in tries if message == 1] == [1, 2, 3]
    assert [attempt for message, attempt in tries if message == 2] == [1, 1]
    assert pool.allowed_connections == 2  # one fewer after the throttle


def test_a_stop_sends_nothing_more_and_a_closed_gate_sends_nothing() -> None:
    tries, _, pool, _ = run_pool(50, {}, size=2, stop_after=5)
    # The try that asked for the stop, and at most the other worker's one in flight.
    assert pool.stop_reason == "enough" and len(tries) in (5, 6)
    nothing, memory, _, _ = run_pool(10, {}, gate_open=False)
    assert nothing == [] and memory.opened == 0


def test_retries_still_waiting_when_the_run_stops_are_handed_back() -> None:
    slow = RetryPolicy(attempts=3, base=60, jitter=0)
    tries, _, _, abandoned = run_pool(2, {0: [Action.RETRY]}, size=1, stop_after=2, retry=slow)
    assert tries == [(0, 1), (1, 1)]
    assert abandoned == [0]  # not waited for: the run ended, the reader stays deferred


@dataclass(frozen=True)
class CountedRetry(RetryPolicy):
    """A retry policy that notes which try each wait follows (within this run)."""

    waits: list[int] = field(default_factory=list)

    def delay(self, attempt: int) -> float:
        self.waits.append(attempt)
        return 0.0


def test_a_reader_tried_in_earlier_runs_waits_as_after_a_first_try() -> None:
    """Attempts are numbered across runs; the waits were too: a reader deferred in
    three runs waited 2·3⁴ s, 2·3⁵ s… in the fourth instead of 2, 6, 18 s."""
    retry = CountedRetry(attempts=3)
    tries, _, _, _ = run_pool(1, {0: [Action.RETRY, Action.RETRY]}, retry=retry, before=9)
    assert tries == [(0, 10), (0, 11), (0, 12)]
    assert retry.waits == [1, 2]  # after this run's first and second try


def test_a_retry_left_waiting_counts_as_deferred_for_its_segments(
    messages: list[OutgoingMessage],
) -> None:
    recorder = Recorder(None, clock=time.time)
    recorder.deferred_unsent(messages[0])
    segments = messages[0].recipient.segments
    assert recorder.report.total.deferred == 1
    assert all(recorder.report.per_segment[s].deferred == 1 for s in segments)


class Witness(MemoryConnection):
    """A connection that reads the ledger on disk at each DATA: the attempt must be there."""

    def __init__(self, memory: Memory, ledger: Path, seen: list[tuple[str, bool]]) -> None:
        super().__init__(memory)
        self.ledger, self.seen, self.recipient = ledger, seen, ""

    async def envelope(self, sender: str, recipient: str) -> None:
        self.recipient = recipient

    async def data(self, wire: bytes) -> tuple[int, str]:
        on_disk = {(r.recipient.lower(), r.outcome) for r in read_records(self.ledger)}
        self.seen.append((self.recipient, (self.recipient.lower(), Outcome.ATTEMPT) in on_disk))
        return 250, "ok"


def test_every_attempt_is_on_disk_before_its_data(
    tmp_path: Path, messages: list[OutgoingMessage]
) -> None:
    """The crash-safety promise: a message is never handed to DATA before the record of
    its attempt is durable, so a crash leaves it in doubt, never silently sent."""
    settings = make_settings(max_connections=2, smtp_security="none", ledger_dir=tmp_path)
    seen: list[tuple[str, bool]] = []
    memory = Memory()
    path = ledger_path(tmp_path, "2017-03")

    async def main() -> None:
        with Ledger(tmp_path, "2017-03") as ledger:
            sender = Sender(
                settings, ledger, policy=QUICK, connect=lambda: Witness(memory, path, seen)
            )
            await sender.run(iter(messages), lambda _: 0)

    asyncio.run(main())
    assert len(seen) == len(messages) and all(durable for _, durable in seen), seen
