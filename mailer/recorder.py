"""The one writer of a send's ledger records and of its report.

Every attempt is handed to the ledger *before* its DATA and every outcome after
it. Each connection has a :class:`Journal`: the records it handed over are
awaited (:meth:`Journal.durable`) before its next DATA, so a crash leaves at most
one message a connection delivered but not recorded, and that one has its
attempt on disk: it is reported in doubt by the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mailer.compose import OutgoingMessage
from mailer.ledger import Ledger, Outcome, Record
from mailer.quota import Clock

Progress = Callable[[str, OutgoingMessage], None]


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

    def count(self, segments: tuple[str, ...], outcome: Outcome, step: int = 1) -> None:
        """Add ``step`` to ``outcome``'s column for each segment and in all."""
        column = str(outcome)
        for segment in segments:
            tally = self.per_segment.setdefault(segment, Tally())
            setattr(tally, column, getattr(tally, column) + step)
        setattr(self.total, column, getattr(self.total, column) + step)

    def pause(self, until: float) -> None:
        """Stopped at a quota: the first pause says when sending can resume."""
        if self.paused_until is None:
            self.paused_until = until

    @property
    def met_trouble(self) -> bool:
        """Whether this run met a failure, a deferral or a stop (exit code 1)."""
        return bool(self.total.failed or self.total.deferred or self.stopped)

    @property
    def complete(self) -> bool:
        """Nobody failed or deferred and no stop: a test send's exit code 0."""
        return not self.met_trouble


class Recorder:
    """Writes a run's records to its ledger (none for a test send) and keeps its report."""

    def __init__(
        self,
        ledger: Ledger | None,
        *,
        run_id: str | None = None,
        progress: Progress | None = None,
        clock: Clock,
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.progress = progress or (lambda outcome, message: None)
        self.clock = clock
        self.report = Report()

    def journal(self) -> Journal:
        """A connection's own journal: its records' durability is awaited before its DATA."""
        return Journal(self)

    def deferred_unsent(self, message: OutgoingMessage) -> None:
        """A retry that was waiting when the run ended: counted deferred (already recorded)."""
        self.report.count(message.recipient.segments, Outcome.DEFERRED)

    async def close(self) -> None:
        if self.ledger is not None:
            await self.ledger.aclose()

    def now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds")

    def _record(
        self,
        message: OutgoingMessage,
        outcome: Outcome,
        attempt: int,
        code: int | None,
        text: str | None,
        pending: list[asyncio.Future[None]],
    ) -> Record:
        record = Record(
            recipient=message.recipient.email,
            outcome=outcome,
            message_id=message.message_id,
            segments=message.recipient.segments,
            attempt=attempt,
            code=code,
            reply=text,
            time=self.now(),
            run=self.run_id,
            language=message.recipient.language,
        )
        self._write(record, pending)
        return record

    def _write(self, record: Record, pending: list[asyncio.Future[None]]) -> None:
        if self.ledger is not None:
            pending.append(self.ledger.append(record))


class Journal:
    """One connection's records: handed to the ledger at once, awaited before DATA."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.pending: list[asyncio.Future[None]] = []

    def attempt(self, message: OutgoingMessage, attempt: int) -> None:
        """Before DATA: this attempt is on disk, so a crash leaves it in doubt, not lost."""
        self.recorder._record(message, Outcome.ATTEMPT, attempt, None, None, self.pending)

    def note(
        self, message: OutgoingMessage, outcome: Outcome, attempt: int, code: int | None, text: str
    ) -> None:
        """An outcome this run is not done with (retried, held): recorded, not counted."""
        self.recorder._record(message, outcome, attempt, code, text, self.pending)

    def finish(
        self, message: OutgoingMessage, outcome: Outcome, attempt: int, code: int | None, text: str
    ) -> None:
        """The run's last word on ``message``: recorded, counted, shown."""
        report = self.recorder.report
        record = self.recorder._record(message, outcome, attempt, code, text, self.pending)
        report.count(message.recipient.segments, outcome)
        if outcome != Outcome.SENT:
            report.failures.append(record)
        self.recorder.progress(str(outcome), message)

    def unfail(self, tries: tuple[tuple[str, int], ...]) -> None:
        """Tries (recipient, attempt) recorded failed that were the relay's refusal after
        all: recorded held (pending, so the next run sends them), no longer counted failed."""
        report = self.recorder.report
        wanted = set(tries)
        kept = []
        for failure in report.failures:
            if (failure.recipient, failure.attempt) not in wanted:
                kept.append(failure)
                continue
            held = replace(failure, outcome=Outcome.HELD, time=self.recorder.now())
            self.recorder._write(held, self.pending)
            report.count(failure.segments, Outcome.FAILED, -1)
        report.failures = kept

    async def durable(self) -> None:
        """Wait until every record this journal handed to the ledger is on disk."""
        if self.pending:
            pending, self.pending = self.pending, []
            await asyncio.gather(*pending)

    async def close(self) -> None:
        """At the connection's end: wait for its last records, whatever happened."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
