"""The send record: one append-only JSON Lines file per issue, durable, readable by a person.

``<ledger dir>/<id>.jsonl`` holds one record per event:

- ``attempt``: a message is about to go to the server (written and fsynced
  *before* its DATA, so a crash leaves a trace);
- ``sent`` (the server answered 2xx to DATA), ``failed`` (5xx: permanent) or
  ``deferred`` (4xx, timeout or dropped connection after every retry);
- ``held``: the run stopped for a relay problem (the relay, the sender or the
  message, not the mailbox; see ``replies.py``): the recipient is pending again;
- ``bounce``: a bounce report read later (information, not a send state);
- ``claim`` and ``release`` (no recipient): a scheduled run's hold on the issue;
- ``paused`` (no recipient): a run stopped at the relay's quota (see ``quota.py``).

A recipient is *done* when its last record is ``sent`` or ``failed``; *in
doubt* when its last record is an ``attempt`` (the run stopped between DATA and
the outcome: it may or may not have been delivered). A resumed run sends to
every recipient not done, the in-doubt ones included, and reports those.

Records are group-committed: writers hand records to :meth:`Ledger.append` and
wait until one ``fsync`` has covered them, so many connections share each fsync.
A connection sends no DATA before its previous outcome and its current attempt
are durable, so a crash can only lose outcomes of messages in flight (at most
one a connection), and each of those has its attempt on disk.

A torn last line (a crash in the middle of a write) is dropped on open: it was
never acknowledged as durable; a damaged line elsewhere stops the run with its
place. A lock file keeps one run per issue at a time, and a ledger deleted or
replaced during a run stops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TextIO

from mailer.errors import LedgerDamaged, LedgerGone, LedgerLocked

__all__ = ["LedgerDamaged", "LedgerGone", "LedgerLocked"]  # their home is errors.py


class Outcome(StrEnum):
    """The closed set of ledger records (a StrEnum: the JSON holds the plain word)."""

    ATTEMPT = "attempt"  # about to go: durable before DATA
    SENT = "sent"  # 2xx to DATA
    FAILED = "failed"  # 5xx about this recipient
    DEFERRED = "deferred"  # 4xx, timeout or drop after every retry this run
    # The run stopped for a relay problem (the relay, the sender or the message,
    # not the mailbox): this recipient was not refused for itself and is pending.
    HELD = "held"
    # Issue-level records of the scheduled workflow: a run claims an issue before
    # it sends, and releases it when its sending ends (whatever happened).
    CLAIM = "claim"
    RELEASE = "release"
    # Issue-level: a run stopped at the relay's quota; ``reply`` says when to resume.
    PAUSED = "paused"
    # A bounce report received later (see bounces.py): information, not a send state.
    BOUNCE = "bounce"


DONE = (Outcome.SENT, Outcome.FAILED)
OUTCOMES = (Outcome.SENT, Outcome.FAILED, Outcome.DEFERRED)
CLAIM, RELEASE, BOUNCE = Outcome.CLAIM, Outcome.RELEASE, Outcome.BOUNCE


@dataclass(frozen=True)
class Record:
    """One line of the ledger."""

    recipient: str
    outcome: Outcome
    message_id: str
    segments: tuple[str, ...]
    attempt: int
    code: int | None = None
    reply: str | None = None
    time: str = ""
    run: str | None = None
    # The reader's language when the message went (written since the health report's
    # language trends; older records have none).
    language: str | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "time": self.time or now(),
            "recipient": self.recipient,
            "outcome": self.outcome,
            "attempt": self.attempt,
            "code": self.code,
            "reply": self.reply,
            "message_id": self.message_id,
            "segments": list(self.segments),
        }
        if self.run:
            data["run"] = self.run
        if self.language:
            data["language"] = self.language
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def for_issue(cls, outcome: Outcome, run: str | None, reply: str | None = None) -> Record:
        """An issue-level record (``claim``, ``release``, ``paused``): no recipient."""
        return cls(
            recipient="",
            outcome=outcome,
            message_id="",
            segments=(),
            attempt=0,
            reply=reply,
            run=run,
        )

    @classmethod
    def bounce(cls, recipient: str, detail: str, report_id: str) -> Record:
        """A report that came back later. Its id (what keeps it from being recorded
        twice) is kept in ``run``, where ledgers have always held it."""
        return cls(
            recipient=recipient,
            outcome=Outcome.BOUNCE,
            message_id="",
            segments=(),
            attempt=0,
            reply=detail,
            run=report_id,
        )

    @property
    def report_id(self) -> str | None:
        """A ``bounce`` record's report id (see :meth:`bounce`)."""
        return self.run if self.outcome == Outcome.BOUNCE else None

    @classmethod
    def from_json(cls, line: str) -> Record:
        return cls.from_dict(json.loads(line))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            recipient=data["recipient"],
            outcome=Outcome(data["outcome"]),
            message_id=data.get("message_id", ""),
            segments=tuple(data.get("segments", ())),
            attempt=int(data.get("attempt", 0)),
            code=data.get("code"),
            reply=data.get("reply"),
            time=data.get("time", ""),
            run=data.get("run"),
            language=data.get("language"),
        )


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def ledger_path(directory: Path, issue: str) -> Path:
    return directory / f"{issue}.jsonl"


def read_records(path: Path, *, skip_damaged: bool = False) -> Iterator[Record]:
    """Every complete record; a torn last line is skipped, a damaged one is an error
    (or, with ``skip_damaged``, skipped: see :meth:`LedgerDir.records`)."""
    for number, line, data in _raw_records(path, skip_damaged=skip_damaged):
        try:
            yield Record.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError):
            if not skip_damaged:
                _damaged(line, path, number)


def _raw_records(
    path: Path, *, skip_damaged: bool = False
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, line, parsed JSON) of every complete line (a torn last line was
    never acknowledged: left out); a damaged one raises, or with ``skip_damaged`` is
    left out too (the readers across issues)."""
    if not path.exists():
        return
    loads = json.loads
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith("\n"):
                return  # torn by a crash: never acknowledged
            if not line.strip():
                continue
            try:
                data = loads(line)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                if skip_damaged:
                    continue
                _damaged(line, path, number)
            yield number, line, data


def _parse(line: str, path: Path, number: int) -> Record:
    """One record; a damaged line (a bad edit, a merge conflict) names its place.

    It is never skipped: it may be the ``sent`` that keeps someone from a second copy.
    """
    try:
        return Record.from_json(line)
    except (ValueError, KeyError, TypeError, AttributeError):
        _damaged(line, path, number)


def _damaged(line: str, path: Path, number: int) -> NoReturn:
    excerpt = line.strip()[:60]
    raise LedgerDamaged(
        f"{path}, line {number}: not a ledger record ({excerpt!r}). A line was edited "
        "or a git merge left conflict markers; restore the file from git (git log -- "
        f"{path}) or remove the damaged line by hand, then run again."
    )


@dataclass
class State:
    """Where each recipient stands, from the ledger; and the scheduled workflow's last
    claim on the issue (see ``dispatch.py``).

    Kept compact, since a resumed send of a long list loads every line: per
    recipient (lower-cased address) only the last outcome and attempt number, and
    whole records only for those that failed or were deferred (for reports).
    """

    last: dict[str, tuple[str, int]] = field(default_factory=dict)
    unfinished: dict[str, Record] = field(default_factory=dict)
    # Claims not released, by run id. Matched by run, never by line order: a union
    # merge of the ledger (.gitattributes) may put a person's lines or another run's
    # claim anywhere.
    claims: dict[str, Record] = field(default_factory=dict)
    # With ``with_segments``: the segments each address was last sent for (status).
    segments: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, *, with_segments: bool = False) -> State:
        """Replay the ledger. Lines are read as plain JSON; a Record is built only for
        the few kept whole (failures, claims): a 100,000-line ledger loads in well
        under a second."""
        state = cls()
        released: set[str] = set()  # runs whose release came (before or after the claim)
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per combination
        # One string object per outcome, shared by every entry (memory on long lists).
        outcomes = {str(o): str(o) for o in (Outcome.ATTEMPT, Outcome.HELD, *OUTCOMES)}
        for number, line, data in _raw_records(path):
            outcome = data.get("outcome")
            if outcome == CLAIM:
                record = _parse(line, path, number)
                if str(record.run or "") not in released:
                    state.claims[str(record.run or "")] = record
            elif outcome == RELEASE:
                released.add(str(data.get("run") or ""))
                state.claims.pop(str(data.get("run") or ""), None)
            elif outcome not in (BOUNCE, Outcome.PAUSED):
                recipient = data.get("recipient")
                if not isinstance(recipient, str) or outcome not in outcomes:
                    _damaged(line, path, number)
                key = recipient.lower()
                outcome = outcomes.get(outcome, outcome)
                state.last[key] = (outcome, int(data.get("attempt") or 0))
                if with_segments and (segments := tuple(data.get("segments") or ())):
                    state.segments[key] = shared.setdefault(segments, segments)
                if outcome in ("failed", "deferred"):
                    state.unfinished[key] = _parse(line, path, number)
                else:
                    state.unfinished.pop(key, None)
        return state

    @property
    def claim(self) -> Record | None:
        """The earliest claim still open (by its time), or None."""
        return min(self.claims.values(), key=lambda r: r.time, default=None)

    def claimed_by_others(self, run: str | None) -> Record | None:
        """An open claim of another run than ``run``, the earliest; None when there is none."""
        others = [r for key, r in self.claims.items() if key != (run or "")]
        return min(others, key=lambda r: r.time, default=None)

    def outcome(self, address: str) -> str | None:
        """The recipient's last outcome (``attempt`` when in doubt), None if never tried."""
        found = self.last.get(address.lower())
        return found[0] if found else None

    def is_done(self, address: str) -> bool:
        return self.outcome(address) in DONE

    def in_doubt(self, address: str) -> bool:
        return self.outcome(address) == "attempt"

    def attempts(self, address: str) -> int:
        found = self.last.get(address.lower())
        return found[1] if found else 0


class Ledger:
    """The issue's ledger opened for a run: locked, appended to, group-committed."""

    def __init__(self, directory: Path, issue: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = ledger_path(directory, issue)
        self._lock_path = directory / f".{issue}.lock"
        self._lock: TextIO | None = None
        self._handle: TextIO | None = None
        self._pending: list[tuple[list[str], asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None

    def __enter__(self) -> Ledger:
        self._lock = self._lock_path.open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise LedgerLocked(
                f"another run is already sending this issue (lock {self._lock_path}); "
                "wait for it to finish, then run again to resume."
            ) from None
        self._drop_torn_tail()
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _drop_torn_tail(self) -> None:
        """Cut a half-written last line so the next record starts on its own line."""
        if not self.path.exists():
            return
        with self.path.open("rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def state(self) -> State:
        return State.load(self.path)

    def _still_ours(self) -> None:
        """Refuse to write once the file we hold is no longer the ledger on disk.

        A ledger deleted or replaced mid-run (a ``git checkout``, a sync tool, a
        tidy colleague) would take every later record into a file nobody reads,
        and the next run would mail everyone again. One ``stat`` per group commit.
        """
        assert self._handle is not None
        held = os.fstat(self._handle.fileno())
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            raise LedgerGone(
                f"the ledger {self.path} was deleted or replaced during the run; the run "
                "stopped at once. Restore it (git checkout, or the copy you replaced it "
                "with), then run the same command again: the ledger decides who is sent."
            )

    def write_now(self, records: Iterable[Record]) -> None:
        """Append and fsync at once (for the few records written outside the send loop)."""
        assert self._handle is not None
        self._still_ours()
        self._handle.write("".join(r.to_json() + "\n" for r in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    @staticmethod
    def append_beside(directory: Path, issue: str, records: Iterable[Record]) -> None:
        """Append records that are not part of a send (bounces), durable on return.

        When no run holds the issue, the ledger is opened as usual. While a send
        holds it, the lines go in with one ``O_APPEND`` write: the send opened the
        file itself (a torn tail was cut then) and writes whole lines the same way,
        so the two never mix within a line, and a bounce never waits for a send.
        """
        records = list(records)
        data = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
        if not data:
            return
        try:
            with Ledger(directory, issue) as ledger:
                ledger.write_now(records)
            return
        except LedgerLocked:
            pass
        descriptor = os.open(ledger_path(directory, issue), os.O_WRONLY | os.O_APPEND)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def append(self, *records: Record) -> asyncio.Future[None]:
        """Queue ``records`` for the next group commit; the future resolves once durable."""
        if self._wake is None:
            self._wake = asyncio.Event()
            self._flusher = asyncio.create_task(self._flush_loop())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(([r.to_json() + "\n" for r in records], future))
        self._wake.set()
        return future

    async def _flush_loop(self) -> None:
        """Write whatever is pending, fsync once, acknowledge every writer covered."""
        assert self._wake is not None and self._handle is not None
        handle = self._handle
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                self._still_ours()
                handle.write("".join(line for lines, _ in batch for line in lines))
                handle.flush()
                await asyncio.to_thread(os.fsync, handle.fileno())
            except (OSError, LedgerGone) as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def aclose(self) -> None:
        """Stop the flusher once everything handed to it is durable."""
        if self._flusher is not None:
            await self.append()  # a barrier: resolves after every earlier record
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
            self._wake = None


class LedgerDir:
    """The folder of ledgers, one per issue: the only code that finds, reads and parses
    them. Quotas, bounce attribution, status, dispatch, publish and the reports all
    read ledgers through it; only :class:`Ledger` writes them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, issue: str) -> Path:
        return ledger_path(self.directory, issue)

    def has(self, issue: str) -> bool:
        """Whether the issue has a ledger (attribution never creates one)."""
        return self.path(issue).is_file()

    def issues(self) -> list[str]:
        """Every issue with a ledger, by id."""
        return sorted(p.stem for p in self.directory.glob("*.jsonl"))

    def records(self, issue: str, *, skip_damaged: bool = False) -> Iterator[Record]:
        """Every complete record of the issue's ledger, in order (none without one).

        A damaged line stops the reader, naming its place, unless ``skip_damaged``:
        readers that gather from every issue (bounce attribution, soft-bounce
        standings) skip it, so one hand-edited old ledger does not stop the reading
        of every report; the issue's own send, status and dispatch still refuse it."""
        return read_records(self.path(issue), skip_damaged=skip_damaged)

    def started(self, issue: str) -> str:
        """The time of the issue's first record ("" when it has none): send order."""
        for _, _, data in _raw_records(self.path(issue), skip_damaged=True):
            return str(data.get("time", ""))
        return ""

    def lines(self, issue: str) -> Iterator[dict[str, Any]]:
        """Every complete line as parsed JSON, for readers that stream every ledger once
        (the health report): no Record is built, and a damaged line is skipped, as for
        the other readers across issues (the issue's own send names it)."""
        for _, _, data in _raw_records(self.path(issue), skip_damaged=True):
            yield data

    def state(self, issue: str, *, with_segments: bool = False) -> State:
        """Where each reader of the issue stands (see :class:`State`)."""
        return State.load(self.path(issue), with_segments=with_segments)

    def sent_since(self, since: float) -> list[float]:
        """Times (epoch seconds) of the messages sent after ``since``, from every ledger:
        the quota windows' history. Read leniently: a damaged line is for the issue's own
        run to report, not a reason to stop another issue's send."""
        starts: list[float] = []
        for issue in self.issues():
            with self.path(issue).open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if '"sent"' not in line:
                        continue
                    try:
                        data = json.loads(line)
                        moment = datetime.fromisoformat(data["time"]).timestamp()
                    except (ValueError, KeyError, TypeError):
                        continue
                    if data.get("outcome") == Outcome.SENT and moment > since:
                        starts.append(moment)
        return starts

    def open(self, issue: str) -> Ledger:
        """The issue's ledger for a run (enter it: it takes the issue's lock)."""
        return Ledger(self.directory, issue)

    def append_beside(self, issue: str, records: Iterable[Record]) -> None:
        """Records that are not part of a send (bounces); see :meth:`Ledger.append_beside`."""
        Ledger.append_beside(self.directory, issue, records)
