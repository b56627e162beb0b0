"""Scheduled dispatch: send each bulletin once its ``send_at`` has passed.

``mailer dispatch`` looks at every ``bulletins/*/bulletin.yaml`` and decides, per
bulletin, one of:

- ``unscheduled``: no ``send_at``; staff send it with ``mailer send``;
- ``not due``: ``send_at`` is still ahead;
- ``complete``: every recipient is sent or failed (nothing to do);
- ``stale``: ``send_at`` is older than ``MAILER_DISPATCH_WINDOW``; a person must
  send it with ``mailer send`` (firing a months-old issue after downtime is a
  known failure of other tools);
- ``blocked``: an earlier scheduled run claimed it and its outcomes never came
  back to the repository; resending could mail everyone twice;
- ``due``: it is sent (or resumed, if an earlier run was interrupted).

Claims make the scheduled workflow safe when state fails to come back: the
workflow first records a ``claim`` (``--claim``, sends nothing) and pushes it;
only then sends (``--run-id`` sends only what this run claimed) and records a
``release``; then pushes the outcomes. A later run that finds a claim without its
release refuses that bulletin and says what to do. ``dispatch`` never runs git:
the workflow's script does (``.github/scripts/``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from mailer import pipeline, translations
from mailer import status as standing
from mailer.bulletin import bulletin_folders
from mailer.compose import Identity
from mailer.errors import ConfigError, InputError, MailerError
from mailer.ledger import CLAIM, RELEASE, Ledger, LedgerDir, Record
from mailer.preview import PreviewResult
from mailer.recorder import Report
from mailer.settings import Settings


class Action(StrEnum):
    """What dispatch does with a bulletin (printed as is in the run's table)."""

    UNSCHEDULED = "unscheduled"
    NOT_DUE = "not due"
    COMPLETE = "complete"
    STALE = "stale"
    BLOCKED = "blocked"
    DUE = "due"
    INVALID = "invalid"
    TRANSLATIONS = "stale translation"  # a translation is older than its English item
    DRAFT = "draft"  # an item is still a draft (mailer new --from)
    SENT = "sent"  # after send_due
    SKIPPED = "skipped"  # due, but not claimed by this run


# Decisions that need a person: the run exits 1.
NEEDS_A_PERSON = (
    Action.STALE,
    Action.BLOCKED,
    Action.SKIPPED,
    Action.TRANSLATIONS,
    Action.DRAFT,
)


@dataclass
class Decision:
    """What dispatch does with one bulletin, and why."""

    folder: Path
    issue: str
    action: Action
    detail: str = ""
    job: pipeline.Job | None = field(default=None, repr=False)
    report: Report | None = None
    preview: PreviewResult | None = None


def parse_now(text: str | None) -> datetime:
    """``--now``: an ISO 8601 moment with its zone; the real time when not given."""
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(
            f"'{text}' is not a moment with a time zone, e.g. 2017-03-28T09:00:00+02:00.",
            field="--now",
        )
    return moment


def decide(
    root: Path,
    settings: Settings,
    now: datetime,
    *,
    only: str | None = None,
    recipients_dir: Path | None = None,
    run: str | None = None,
) -> list[Decision]:
    """Decide, for each bulletin under ``root``, whether this run (``run``) sends it."""
    decisions = []
    for folder in bulletin_folders(root):
        if only is not None and folder.name != only:
            continue
        decisions.append(_decide_one(folder, settings, now, recipients_dir, run))
    return decisions


def _decide_one(
    folder: Path,
    settings: Settings,
    now: datetime,
    recipients_dir: Path | None,
    run: str | None,
) -> Decision:
    try:
        job = pipeline.prepare(folder, settings, recipients_dir=recipients_dir, dry_run=True)
    except MailerError as exc:
        return Decision(folder, folder.name, Action.INVALID, exc.describe())
    bulletin = job.bulletin
    decision = Decision(folder, bulletin.id, Action.DUE, job=job)
    if bulletin.send_at is None:
        decision.action, decision.detail = (
            Action.UNSCHEDULED,
            "no send_at; send it with mailer send",
        )
        return decision
    if now < bulletin.send_at:
        decision.action, decision.detail = Action.NOT_DUE, f"due at {bulletin.send_at.isoformat()}"
        return decision
    progress = standing.status(job, settings)
    total = progress.total
    if progress.complete:
        decision.action, decision.detail = (
            Action.COMPLETE,
            f"{total['sent']} sent, {total['failed']} failed",
        )
        return decision
    state = LedgerDir(settings.ledger_dir).state(bulletin.id)
    other = state.claimed_by_others(run)
    if other is not None:
        decision.action = Action.BLOCKED
        decision.detail = (
            f"run {other.run} claimed it at {other.time} and its outcomes never came "
            "back to the repository, so it may have sent already. Restore "
            f"ledger/{bulletin.id}.jsonl from that run's 'ledger' artifact and commit it; or, if "
            f"you are sure that run sent nothing, run: mailer dispatch --force {bulletin.id}"
        )
        return decision
    overdue = now - bulletin.send_at
    started = bool(total["sent"] or total["failed"] or total["deferred"])
    # The window guards starting a send; one already under way (a list larger
    # than a day's quota) is continued whatever its age.
    if overdue > settings.dispatch_window and not started:
        decision.action = Action.STALE
        decision.detail = (
            f"send_at {bulletin.send_at.isoformat()} is {_age(overdue)} ago, beyond "
            f"MAILER_DISPATCH_WINDOW; a person must send it: mailer send {folder}"
        )
        return decision
    if drafts := [item.slug for item in bulletin.items if item.draft]:
        decision.action = Action.DRAFT
        decision.detail = (
            f"still drafts: {', '.join(drafts)}; edit each and delete its 'draft: true' line"
        )
        return decision
    if stale := translations.stale(bulletin):
        decision.action = Action.TRANSLATIONS
        decision.detail = (
            f"the English changed after these translations were made: "
            f"{', '.join(t.name for t in stale)}; have them reviewed and stamped (mailer "
            f"translations {folder} --stamp NAME), or send by hand with "
            "--allow-stale-translations"
        )
        return decision
    if started:
        decision.detail = f"resuming: {total['pending'] + total['deferred']} left"
    return decision


def _age(delta: timedelta) -> str:
    """An age as staff say it: hours up to two days, then days."""
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def claim(decisions: list[Decision], settings: Settings, run: str) -> list[Decision]:
    """Record this run's claim on every due bulletin; sends nothing.

    Settings a real send needs are checked first, so a misconfigured run claims
    nothing (and blocks nothing).
    """
    if any(d.action is Action.DUE for d in decisions):
        Identity.from_settings(settings, dry_run=False)
    claimed = []
    for decision in decisions:
        if decision.action is not Action.DUE:
            continue
        with Ledger(settings.ledger_dir, decision.issue) as ledger:
            ledger.write_now([Record.for_issue(CLAIM, run)])
        claimed.append(decision)
    return claimed


def force_release(settings: Settings, issue: str) -> None:
    """Release a dangling claim on ``issue`` (a person decided it sent nothing)."""
    with Ledger(settings.ledger_dir, issue) as ledger:
        state = ledger.state()
        if state.claims:
            ledger.write_now([Record.for_issue(RELEASE, run) for run in state.claims])


def send_due(
    decisions: list[Decision],
    settings: Settings,
    *,
    run: str | None,
    allow_stale_sync: bool = False,
) -> None:
    """Send every due bulletin (only those this run claimed, when ``run`` is given),
    each through the one path of a real send (``pipeline.real_send``)."""
    for decision in decisions:
        if decision.action is not Action.DUE or decision.job is None:
            continue
        with Ledger(settings.ledger_dir, decision.issue) as ledger:
            state = ledger.state()
            if run is not None and run not in state.claims:
                decision.action = Action.SKIPPED
                decision.detail = f"not claimed by run {run}; run mailer dispatch --claim first"
                continue
            other = state.claimed_by_others(run)
            if run is not None and other is not None:
                # Two runs claimed at once (the union merge kept both): neither sends;
                # the next scheduled run sees both released and decides again.
                decision.action = Action.BLOCKED
                decision.detail = f"run {other.run} claimed it too; this run sends nothing"
                ledger.write_now([Record.for_issue(RELEASE, run)])
                continue
            try:
                job = pipeline.prepare(
                    decision.folder,
                    settings,
                    recipients_dir=decision.job.recipients.directory,
                    dry_run=False,
                )
                sent = pipeline.real_send(
                    job, settings, ledger, run_id=run, allow_stale_sync=allow_stale_sync
                )
                decision.report = sent.report
            finally:
                # Whatever happened, this run's outcomes are in the ledger now: the
                # release tells the next run they came back (only a crash leaves none).
                if run is not None:
                    ledger.write_now([Record.for_issue(RELEASE, run)])
        decision.action = Action.SENT
        decision.detail = _summary(decision.report)


def _summary(report: Report | None) -> str:
    if report is None:
        return ""
    t = report.total
    text = f"{t.sent} sent, {t.failed} failed, {t.deferred} deferred"
    if report.in_doubt:
        text += f", {len(report.in_doubt)} in doubt resent"
    if report.stopped:
        text += f"; stopped: {report.stopped}"
    return text


def preview_due(decisions: list[Decision], out_dir: Path) -> None:
    """For ``--dry-run``: the mbox and preview page of every bulletin that would go out."""
    for decision in decisions:
        if decision.action is Action.DUE and decision.job is not None:
            decision.preview = pipeline.preview(decision.job, out_dir)


def run(
    root: Path,
    settings: Settings,
    now: datetime,
    *,
    approve: Callable[[list[str]], bool],
    only: str | None = None,
    recipients_dir: Path | None = None,
    run_id: str | None = None,
    claim_only: bool = False,
    dry_run: bool = False,
    force: str | None = None,
    allow_stale_sync: bool = False,
) -> list[Decision]:
    """``mailer dispatch``: decide, then claim, preview or send what is due.

    ``approve`` is asked once with the due issues' ids before a real send (the
    command line asks the person unless --yes). The endpoint's unsubscribes must be
    synced recently before a claim too: a claim the send then refused would block
    the issue until a person released it.
    """
    from mailer import sync as syncing

    if claim_only and run_id is None:
        raise InputError("--claim needs --run-id (the scheduled run's id).", field="--run-id")
    if force is not None:
        force_release(settings, force)
    decisions = decide(root, settings, now, only=only, recipients_dir=recipients_dir, run=run_id)
    due = [d.issue for d in decisions if d.action is Action.DUE]
    if due and not dry_run and not allow_stale_sync:
        syncing.require_fresh(settings)
    if claim_only:
        claim(decisions, settings, run_id or "")
    elif dry_run:
        preview_due(decisions, settings.preview_dir)
    elif due and approve(due):
        send_due(decisions, settings, run=run_id, allow_stale_sync=allow_stale_sync)
    return decisions


def exit_code(decisions: list[Decision], settings: Settings) -> int:
    """As ``send``: 2 for bad input, 1 when anything needs a person or is unfinished."""
    if any(d.action is Action.INVALID for d in decisions):
        return 2
    if any(d.action in NEEDS_A_PERSON for d in decisions):
        return 1
    codes = {
        standing.exit_code(d.job, settings, d.report)
        for d in decisions
        if d.action is Action.SENT and d.job is not None
    }
    if 1 in codes:
        return 1
    return standing.PAUSED_AT_QUOTA if standing.PAUSED_AT_QUOTA in codes else 0
