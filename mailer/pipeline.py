"""The jobs the commands run, wiring the stages: load → compose → sink.

Kept apart from ``cli.py`` so the command line only parses arguments and prints,
and tests can drive a whole job without a terminal.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailer import archive, suppressions, translations
from mailer import status as standing
from mailer.compose import Composer, Identity, OutgoingMessage, VariantKey
from mailer.delivery import Progress, Report, RetryPolicy, Sender
from mailer.errors import DeliveryError, RecipientError
from mailer.issue import Issue, load_issue
from mailer.ledger import Ledger, LedgerDir, Outcome, Record, State
from mailer.preview import PreviewResult, write_preview
from mailer.quota import Clock
from mailer.replies import read_reply
from mailer.settings import Settings
from mailer.translations import Translation


@dataclass
class Job(Issue):
    """An issue (bulletin and validated lists) with a composer ready to render."""

    composer: Composer = field(kw_only=True)
    limit: int | None = None
    # Stale translations left out (--allow-stale-translations): their readers get English.
    fallbacks: list[Translation] = field(default_factory=list, kw_only=True)

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
    english_for_stale: bool = False,
) -> Job:
    """Load and validate everything a send or a preview needs; nothing is written.

    ``english_for_stale``: translations whose English changed since they were made
    are left out, so their readers get the English item (``--allow-stale-translations``).
    """
    issue = load_issue(
        folder,
        settings,
        recipients_dir=recipients_dir,
        segments=segments,
        skip_invalid=skip_invalid,
    )
    identity = Identity.from_settings(settings, dry_run=dry_run)
    bulletin, fallbacks = issue.bulletin, list[Translation]()
    if english_for_stale:
        bulletin, fallbacks = translations.without_stale(bulletin)
    composer = Composer(bulletin, identity, templates=settings.templates_dir)
    return Job(bulletin, issue.recipients, composer=composer, limit=limit, fallbacks=fallbacks)


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
    for address, segments in job.recipients.memberships():
        if state.is_done(address):
            result.done += 1
            continue
        if job.limit is not None and result.pending_total >= job.limit:
            continue
        result.pending_total += 1
        result.in_doubt += state.in_doubt(address)
        for segment in segments:
            result.pending[segment] = result.pending.get(segment, 0) + 1
    return result


def plan_now(job: Job, settings: Settings) -> Plan:
    """What a real send would mail now, read from the ledger without taking its lock
    (a dry run says it; a real send plans again under the lock)."""
    return plan(job, LedgerDir(settings.ledger_dir).state(job.bulletin.id))


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
    allow_many: bool = False,
    clock: Clock = time.time,
) -> Report:
    """Send to every recipient not done; record each outcome; resume-safe.

    ``allow_many`` lifts the cap on how many dead mailboxes one run suppresses;
    ``clock`` is wall time for quotas and the ledger (tests move it a day ahead).
    """
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

    sender = Sender(settings, ledger, policy=policy, progress=progress, run_id=run_id, clock=clock)
    try:
        report = _run_async(sender, pending(), state.attempts)
    except DeliveryError as exc:
        if isinstance(exc.report, Report):
            exc.report.in_doubt = in_doubt
            suppress_dead_mailboxes(job, state, exc.report, allow_many=allow_many)
        raise
    report.in_doubt = in_doubt
    suppress_dead_mailboxes(job, state, report, allow_many=allow_many)
    if report.paused_until is not None:  # tells the scheduled run's fast path to come back
        resume = datetime.fromtimestamp(report.paused_until, UTC).isoformat(timespec="seconds")
        ledger.write_now(
            [Record.for_issue(Outcome.PAUSED, run_id, reply=f"quota: resume after {resume}")]
        )
    return report


def _no_progress(plan: Plan) -> AbstractContextManager[Progress | None]:
    return nullcontext()


@dataclass
class SendHooks:
    """What the person at the terminal sees and decides during a real send: the
    command line's part, passed in (dispatch, unattended, takes the defaults)."""

    planned: Callable[[Plan], None] = lambda plan: None  # who is mailed now
    checking_archive: Callable[[], None] = lambda: None  # before a wait of up to a minute
    approve: Callable[[Plan], bool] = lambda plan: True  # False: nothing is sent
    # Wraps the send; yields where each outcome goes (a progress bar), or None.
    sending: Callable[[Plan], AbstractContextManager[Progress | None]] = _no_progress


@dataclass
class SendResult:
    """What a real send did: its plan, and the run's report unless nothing was sent."""

    plan: Plan
    report: Report | None  # None: nothing was pending, or the person said no
    approved: bool
    exit_code: int


def real_send(
    job: Job,
    settings: Settings,
    ledger: Ledger | None = None,
    *,
    hooks: SendHooks | None = None,
    run_id: str | None = None,
    allow_many: bool = False,
    allow_stale_sync: bool = False,
) -> SendResult:
    """The one path of a real send, for ``mailer send`` and ``mailer dispatch``.

    In order: no translation may be older than its English item (see
    ``translations.py``); the endpoint's unsubscribes must be synced recently (unless
    ``allow_stale_sync``); plan who is still to be mailed; with nobody left, only
    the suppression follow-up runs (a crash or the cap may have left dead mailboxes
    unsuppressed); the web archive must serve every page the messages link to
    (a send never goes out with dead links); the person approves; then deliver.
    ``ledger``, when given, must be entered (it holds the issue's lock; dispatch holds
    it across its claim); else it is opened here, after the sync check, so a refused
    send writes nothing.
    """
    from mailer import sync as syncing

    job.bulletin.refuse_drafts()
    translations.refuse_stale(job.bulletin)
    if not allow_stale_sync:
        syncing.require_fresh(settings)
    if ledger is None:
        with open_ledger(job, settings) as opened:
            return _real_send(job, settings, opened, hooks or SendHooks(), run_id, allow_many)
    return _real_send(job, settings, ledger, hooks or SendHooks(), run_id, allow_many)


def _real_send(
    job: Job,
    settings: Settings,
    ledger: Ledger,
    hooks: SendHooks,
    run_id: str | None,
    allow_many: bool,
) -> SendResult:
    planned = plan(job, ledger.state())
    hooks.planned(planned)
    if planned.pending_total == 0:
        leftover = Report()
        suppress_dead_mailboxes(job, planned.state, leftover, allow_many=allow_many)
        return SendResult(planned, leftover, True, standing.exit_code(job, settings))
    if settings.archive_url:
        hooks.checking_archive()
        archive.require_live(job.composer, job.recipients, settings.archive_wait)
    if not hooks.approve(planned):
        return SendResult(planned, None, False, 0)
    with hooks.sending(planned) as progress:
        report = deliver(
            job,
            settings,
            ledger,
            planned.state,
            progress=progress,
            run_id=run_id,
            allow_many=allow_many,
        )
    return SendResult(planned, report, True, standing.exit_code(job, settings, report))


SUPPRESSION_CAP_SHARE = 0.05
SUPPRESSION_CAP_MIN = 20


def suppression_cap(list_size: int) -> int:
    """How many addresses one run may suppress on its own: 5% of the list, at least 20.

    More "no such mailbox" replies than that are likelier a relay that answers
    5.1.1 for everyone than a list that rotted overnight.
    """
    return max(SUPPRESSION_CAP_MIN, int(list_size * SUPPRESSION_CAP_SHARE))


def suppress_dead_mailboxes(
    job: Job, state: State, report: Report, *, allow_many: bool = False
) -> None:
    """Suppress every recipient the ledger shows refused as a dead mailbox, not yet suppressed.

    Read from the ledger (earlier runs included), so a crash between a refusal and
    its suppression, or a run held back by the cap, is made good by the next run.
    """
    refused = {
        r.recipient.lower(): r.recipient
        for r in (*state.unfinished.values(), *report.failures)
        if r.outcome == Outcome.FAILED and read_reply(r.code, r.reply).mailbox_gone
    }
    if not refused:
        return
    suppressed = suppressions.load(job.recipients.directory)
    fresh = [address for key, address in refused.items() if key not in suppressed]
    if len(fresh) > suppression_cap(len(job.recipients)) and not allow_many:
        report.suppression_withheld = fresh
        return
    report.suppressed = list(
        suppressions.suppress(job.recipients.directory, fresh, "rejected: no such mailbox").added
    )


def dead_archive_links(job: Job, settings: Settings) -> list[str]:
    """For ``check`` and ``--test-to``: the archive addresses the messages link to that
    are not served yet (no wait: before send_at the pages may not be published)."""
    if not settings.archive_url:
        return []
    return archive.missing(archive.archive_urls(job.composer, job.recipients), wait=0)


def validate_test_address(address: str) -> str:
    """The ``--test-to`` address, validated like a recipient's."""
    try:
        return suppressions.normalize_address(address)
    except ValueError as exc:
        raise RecipientError(f"--test-to: {exc}.", field="--test-to") from None


def send_test_messages(job: Job, settings: Settings, address: str) -> Report:
    """One message of each variant to ``address``, subject marked [TEST]; no ledger."""
    test_composer = Composer(
        job.bulletin,
        job.composer.identity,
        templates=settings.templates_dir,
        subject_prefix="[TEST] ",
        test=True,
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


STOP_GRACE = 5.0  # seconds messages in flight get after Ctrl-C or SIGTERM


def _run_async(
    sender: Sender, messages: Iterator[OutgoingMessage], attempts: Callable[[str], int]
) -> Report:
    """Run the sender; the first Ctrl-C stops taking new messages, in-flight ones finish."""

    async def main() -> Report:
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(sender.run(messages, attempts))

        def stop(why: str) -> None:
            # Start nothing new; messages in flight get STOP_GRACE seconds, then the run
            # ends and they stay in doubt (their attempt is on disk): a CI runner kills
            # the whole process tree 10 s after its cancel signal.
            sender.request_stop(why)
            loop.call_later(STOP_GRACE, running.cancel)

        # Signal handlers can only be set from the main thread (always so from the CLI).
        handle_signals = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(
                sig,
                stop,
                "interrupted (Ctrl-C, or a cancel); run the same command again to resume",
            )
        try:
            return await running
        except asyncio.CancelledError:  # stopped by a signal, after the grace period
            sender.report.stopped = sender.report.stopped or "interrupted by a signal"
            return sender.report
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
