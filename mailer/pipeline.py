"""The jobs the commands run, wiring the stages: load → compose → sink.

Kept apart from ``cli.py`` so the command line only parses arguments and prints,
and tests can drive a whole job without a terminal.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from mailer.bounces import is_mailbox_gone
from mailer.bulletin import Bulletin, load_bulletin
from mailer.compose import Composer, Identity, OutgoingMessage, VariantKey
from mailer.delivery import Progress, Report, RetryPolicy, Sender
from mailer.errors import ContentError, RecipientError
from mailer.ledger import OUTCOMES, Ledger, Record, State, ledger_path
from mailer.preview import PreviewResult, write_preview
from mailer.recipients import RecipientList, available_segments, load_recipients
from mailer.settings import Settings
from mailer.unsubscribe import suppress


@dataclass
class Job:
    """A bulletin, its validated recipients and a composer ready to render."""

    bulletin: Bulletin
    recipients: RecipientList
    composer: Composer
    limit: int | None = None

    def messages(self) -> Iterator[OutgoingMessage]:
        """The lazy message stream, cut at ``--limit`` when one is given."""
        stream = self.composer.stream(self.recipients)
        return itertools.islice(stream, self.limit) if self.limit is not None else stream


def prepare(
    folder: Path,
    settings: Settings,
    *,
    recipients_dir: Path | None = None,
    segments: Sequence[str] = (),
    skip_invalid: bool = False,
    dry_run: bool = True,
    limit: int | None = None,
) -> Job:
    """Load and validate everything a send or a preview needs; nothing is written."""
    directory = recipients_dir or settings.recipients_dir
    known = available_segments(directory)
    bulletin = load_bulletin(folder, known)
    chosen = _choose_segments(bulletin, known, segments)
    recipients = load_recipients(directory, chosen, skip_invalid=skip_invalid)
    identity = Identity.from_settings(settings, dry_run=dry_run)
    composer = Composer(bulletin, identity, templates=settings.templates_dir)
    return Job(bulletin, recipients, composer, limit)


def _choose_segments(
    bulletin: Bulletin, known: Sequence[str], asked: Sequence[str]
) -> tuple[str, ...]:
    """Segments in bulletin order (else alphabetical), narrowed by ``--segment``."""
    base = bulletin.segments or tuple(known)
    for segment in asked:
        if segment not in base:
            raise ContentError(
                f"--segment {segment}: not a segment of this bulletin ({', '.join(base)}).",
                file=bulletin.path / "bulletin.yaml",
                field="segments",
            )
    return tuple(s for s in base if s in asked) if asked else base


def preview(job: Job, out_dir: Path) -> PreviewResult:
    """The dry run: every message to the mbox, every variant to the preview page."""
    return write_preview(job.composer, job.recipients, out_dir, job.messages())


@dataclass
class Plan:
    """Who a real send will mail now: per segment, the recipients not done yet."""

    state: State
    pending: dict[str, int] = field(default_factory=dict)
    pending_total: int = 0
    done: int = 0
    in_doubt: int = 0


def plan(job: Job, state: State) -> Plan:
    """Count, per segment, who is still to be sent to (and who is already done)."""
    result = Plan(state)
    for recipient in job.recipients:
        if state.is_done(recipient.email):
            result.done += 1
            continue
        if job.limit is not None and result.pending_total >= job.limit:
            continue
        result.pending_total += 1
        result.in_doubt += state.in_doubt(recipient.email)
        for segment in recipient.segments:
            result.pending[segment] = result.pending.get(segment, 0) + 1
    return result


def open_ledger(job: Job, settings: Settings) -> Ledger:
    """The issue's ledger, to be entered (``with``) for the whole run: it holds the lock."""
    return Ledger(settings.ledger_dir, job.bulletin.id)


def deliver(
    job: Job,
    settings: Settings,
    ledger: Ledger,
    state: State,
    *,
    policy: RetryPolicy | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> Report:
    """Send to every recipient not done; record each outcome; resume-safe."""
    in_doubt: list[str] = []

    def pending() -> Iterator[OutgoingMessage]:
        count = 0
        for recipient in job.recipients:
            if state.is_done(recipient.email):
                continue
            if job.limit is not None and count >= job.limit:
                return
            count += 1
            if state.in_doubt(recipient.email):
                in_doubt.append(recipient.email)
            yield job.composer.compose(recipient)

    sender = Sender(settings, ledger, policy=policy, progress=progress, run_id=run_id)
    report = _run_async(sender, pending(), state.attempts)
    report.in_doubt = in_doubt
    gone = [
        r.recipient
        for r in report.failures
        if r.outcome == "failed" and is_mailbox_gone(r.code, r.reply)
    ]
    if gone:  # the relay says these mailboxes do not exist: never mail them again
        report.suppressed = list(
            suppress(job.recipients.directory, gone, "rejected: no such mailbox").added
        )
    return report


def validate_test_address(address: str) -> str:
    """The ``--test-to`` address, validated like a recipient's."""
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise RecipientError(f"--test-to: {exc}", field="--test-to") from None


def send_test_messages(job: Job, settings: Settings, address: str) -> Report:
    """One message of each variant to ``address``, subject marked [TEST]; no ledger."""
    test_composer = Composer(
        job.bulletin,
        job.composer.identity,
        templates=settings.templates_dir,
        subject_prefix="[TEST] ",
    )
    seen: set[VariantKey] = set()

    def samples() -> Iterator[OutgoingMessage]:
        for recipient in job.recipients:
            key = VariantKey(recipient.segments, recipient.language)
            if key not in seen:
                seen.add(key)
                yield test_composer.compose(recipient, deliver_to=address)

    sender = Sender(settings, None, policy=RetryPolicy(attempts=2, base=1.0))
    return _run_async(sender, samples(), lambda _: 0)


def _run_async(
    sender: Sender, messages: Iterator[OutgoingMessage], attempts: Callable[[str], int]
) -> Report:
    """Run the sender; the first Ctrl-C stops taking new messages, in-flight ones finish."""

    async def main() -> Report:
        loop = asyncio.get_running_loop()
        # Signal handlers can only be set from the main thread (always so from the CLI).
        handle_ctrl_c = threading.current_thread() is threading.main_thread()
        if handle_ctrl_c:
            loop.add_signal_handler(
                signal.SIGINT,
                sender.request_stop,
                "interrupted (Ctrl-C); run the same command again to resume",
            )
        try:
            return await sender.run(messages, attempts)
        finally:
            if handle_ctrl_c:
                loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


@dataclass
class Status:
    """Per segment and in all: sent, failed, deferred, pending (from the ledger)."""

    segments: dict[str, dict[str, int]]
    total: dict[str, int]
    failures: list[Record]
    in_doubt: int

    def as_json(self) -> dict[str, object]:
        return {"segments": self.segments, "total": self.total}


def status(job: Job, settings: Settings) -> Status:
    """Where the issue's send stands, for each current recipient."""
    state = State.load(ledger_path(settings.ledger_dir, job.bulletin.id))
    empty = {"sent": 0, "failed": 0, "deferred": 0, "pending": 0}
    segments = {s: dict(empty) for s in job.recipients.segments}
    total = dict(empty)
    failures: list[Record] = []
    in_doubt = 0
    for recipient in job.recipients:
        last = state.outcome(recipient.email)
        outcome = last if last in OUTCOMES else "pending"
        in_doubt += last == "attempt"
        if outcome in ("failed", "deferred"):
            failures.append(state.unfinished[recipient.email.lower()])
        total[outcome] += 1
        for segment in recipient.segments:
            segments[segment][outcome] += 1
    return Status(segments, total, failures, in_doubt)
