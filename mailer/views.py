"""What the commands print: tables, summaries and warnings, and nothing else.

The command line (``cli.py``) parses, calls one pipeline function and hands the
result here. Markup is off on both consoles: replies, links, names and
Message-IDs come from outside, and a "[/]" in one of them must print as it is,
not crash or vanish. Styles are applied with ``Text`` (see :func:`label`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # the types only: printing loads no pipeline stage
    from mailer.bounces import BounceReport
    from mailer.bulletin import Bulletin
    from mailer.checks import CheckReport
    from mailer.dispatch import Decision
    from mailer.inbox import InboxResult
    from mailer.issue import Issue
    from mailer.ledger import Record
    from mailer.pipeline import Job, Plan
    from mailer.preview import PreviewResult
    from mailer.publish import Published
    from mailer.recipients import RecipientList
    from mailer.recorder import Progress as OnOutcome
    from mailer.recorder import Report
    from mailer.report import Report as HealthReport
    from mailer.scaffold import NewIssue
    from mailer.status import Status
    from mailer.suppressions import Added
    from mailer.sync import SourceResult
    from mailer.translations import Translation

out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False, markup=False)

# How many failures a send's summary lists before pointing at ``mailer status``.
FAILURES_SHOWN = 20


def label(label: str, style: str, rest: object) -> Text:
    """``label`` styled, then ``rest`` as plain text."""
    return Text.assemble((label, style), " ", str(rest))


def _bold(text: object) -> Text:
    return Text(str(text), style="bold")


def error(text: object) -> None:
    """One clear paragraph on stderr (the exit code says the rest)."""
    err.print(label("error:", "bold red", text), soft_wrap=True)


def warning(text: object) -> None:
    err.print(label("warning:", "yellow", text), soft_wrap=True)


def line(text: object) -> None:
    """A plain line on stdout (paths, notes), never wrapped."""
    out.print(str(text), soft_wrap=True)


def skipped_rows(recipients: RecipientList) -> None:
    """Rows left out (--skip-invalid) and rows kept with a warning."""
    for problem in recipients.skipped:
        err.print(label("skipped:", "yellow", problem.describe()), soft_wrap=True)
    for problem in recipients.warnings:
        warning(problem.describe())


def dry_run(job: Job, result: PreviewResult, now: Plan | None = None) -> None:
    table = Table(title=f"Dry run of {job.bulletin.id}: nothing was sent")
    table.add_column("variant (segments · language)")
    table.add_column("messages", justify="right")
    for summary in result.variants.values():
        table.add_row(summary.key.label(), str(summary.count))
    table.add_row(_bold("total"), _bold(result.messages))
    out.print(table)
    counts = ", ".join(f"{s}: {n}" for s, n in job.recipients.per_segment.items())
    out.print(
        f"Per segment: {counts} (a reader in two segments counts in each); suppressed: "
        f"{job.recipients.suppressed}."
    )
    if now is not None and now.done:
        out.print(
            f"The ledger shows {now.done} of them done in earlier runs: a real send now "
            f"would mail {now.pending_total}."
        )
    if job.composer.identity.placeholder:
        out.print(
            f"MAILER_FROM is not set: using the placeholder {job.composer.identity.from_header}."
        )
    line(result.mbox)
    line(result.page)


def dead_archive_links(dead: list[str]) -> None:
    """For check and --test-to: before send_at the pages may not be published yet."""
    if dead:
        warning(
            f"the web archive does not serve {len(dead)} address(es) the messages link to "
            f"yet (first: {dead[0]}); a real send refuses until it does."
        )


def test_send(address: str, report: Report) -> None:
    total = report.total
    out.print(
        f"Test send to {address}: {total.sent} of "
        f"{total.sent + total.failed + total.deferred} variant(s) accepted "
        "(subject marked [TEST]; nothing recorded in the ledger)."
    )
    for record in report.failures:
        err.print(label(f"{record.outcome}:", "red", f"{record.code or ''} {record.reply or ''}"))


def plan(job: Job, plan: Plan) -> None:
    """Who a real send mails now, before it asks."""
    table = Table(title=f"{job.bulletin.id}: to send now")
    table.add_column("segment")
    table.add_column("recipients", justify="right")
    for name in job.recipients.segments:
        table.add_row(name, str(plan.pending.get(name, 0)))
    table.add_row(_bold("all (each address once)"), _bold(plan.pending_total))
    out.print(table)
    if plan.done:
        out.print(f"{plan.done} recipient(s) already done in an earlier run: skipped.")
    if plan.in_doubt:
        out.print(
            f"{plan.in_doubt} recipient(s) in doubt (a run stopped while their "
            "message was in flight): they are sent again and may get it twice."
        )
    if plan.pending_total == 0:
        out.print("Nothing to send.")
    send_at = job.bulletin.send_at
    if send_at is not None and send_at > datetime.now(send_at.tzinfo) and job.composer.archive:
        out.print(
            f"This issue is due at {send_at.isoformat()}: a plain mailer publish puts it on "
            f"the web archive from then (before, only mailer publish --include "
            f"{job.bulletin.id} does)."
        )


def checking_archive() -> None:
    out.print("Checking that the web archive serves what the messages link to…")


@contextmanager
def progress_bar(total: int) -> Iterator[OnOutcome]:
    """A live bar while a send runs; yields the callback each outcome goes to."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "sent {task.fields[sent]} · failed {task.fields[failed]} · "
            "deferred {task.fields[deferred]}"
        ),
        _RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task("sending", total=total, sent=0, failed=0, deferred=0)
        tally = {"sent": 0, "failed": 0, "deferred": 0}

        def outcome(name: str, _: object) -> None:
            tally[name] += 1
            bar.update(
                task,
                advance=1,
                sent=tally["sent"],
                failed=tally["failed"],
                deferred=tally["deferred"],
            )

        yield outcome


class _RateColumn(ProgressColumn):
    """Messages per second (rich's speed column is for bytes)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} msg/s")


def report(job: Job, report: Report, *, stopped: bool = True) -> None:
    """What one run did, per segment, with its failures and suppressions (and why it
    stopped, unless an error about to be printed says it)."""
    table = Table(title=f"{job.bulletin.id}: this run")
    for column in ("segment", "sent", "failed", "deferred"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for name, tally in report.per_segment.items():
        table.add_row(name, str(tally.sent), str(tally.failed), str(tally.deferred))
    t = report.total
    table.add_row(_bold("all (each address once)"), str(t.sent), str(t.failed), str(t.deferred))
    out.print(table)
    failures(report.failures[:FAILURES_SHOWN])
    if len(report.failures) > FAILURES_SHOWN:
        out.print(f"  … and {len(report.failures) - FAILURES_SHOWN} more: see mailer status.")
    if report.in_doubt:
        out.print(
            f"Resent {len(report.in_doubt)} in-doubt recipient(s) (they may get it twice): "
            + ", ".join(report.in_doubt[:10])
        )
    suppressions(report)
    if report.stopped and stopped:
        out.print(label("Stopped:", "yellow", report.stopped))


def suppressions(report: Report) -> None:
    """Dead mailboxes a send suppressed, or withheld beyond the cap."""
    from mailer.pipeline import SUPPRESSION_CAP_MIN, SUPPRESSION_CAP_SHARE

    if report.suppressed:
        out.print(
            f"Added to suppressions (no such mailbox): {', '.join(report.suppressed[:10])}"
            + (" …" if len(report.suppressed) > 10 else "")
        )
    if report.suppression_withheld:
        count = len(report.suppression_withheld)
        warning(
            f"{count} addresses were refused as dead mailboxes: more than one run suppresses "
            f"on its own ({SUPPRESSION_CAP_SHARE:.0%} of the list, at least "
            f"{SUPPRESSION_CAP_MIN}). None was suppressed: a relay that refuses everyone is "
            "likelier than that many dead mailboxes. Check `mailer status`; if they really "
            "are gone, run the same send command again with --allow-mass-suppression (it "
            "sends nothing more)."
        )


def failures(records: Iterable[Record], suppressed: frozenset[str] = frozenset()) -> None:
    for record in records:
        note = " (suppressed since)" if record.recipient in suppressed else ""
        reply = f"{record.code or ''} {record.reply or ''}"
        line(f"  {record.outcome}: {record.recipient}{note}: {reply}")


def status(job: Issue, result: Status) -> None:
    table = Table(title=f"{job.bulletin.id}: status")
    columns = ("sent", "failed", "deferred", "pending")
    table.add_column("segment")
    for column in columns:
        table.add_column(column, justify="right")
    for name, counts in result.segments.items():
        table.add_row(name, *(str(counts[k]) for k in columns))
    table.add_row(_bold("all (each address once)"), *(str(result.total[k]) for k in columns))
    out.print(table)
    if result.in_doubt:
        out.print(f"{result.in_doubt} pending recipient(s) are in doubt (a run stopped mid-send).")
    if result.sent_then_suppressed:
        out.print(
            f"{result.sent_then_suppressed} reader(s) received this issue and unsubscribed "
            "or bounced since: sent, and in suppressions.csv now (never mailed again)."
        )
    unmailed = job.recipients.suppressed - result.sent_then_suppressed
    if unmailed > 0:
        out.print(
            f"{unmailed} address(es) of the lists are in suppressions.csv (unsubscribed or "
            "bounced): not mailed this issue."
        )
    if any(result.bounces.values()):
        b = result.bounces
        out.print(
            f"Returned later: {b['hard']} dead address(es) (suppressed), {b['soft']} soft "
            f"bounce(s), {b['refused']} refused for policy or reputation (never suppressed)."
        )
    for domain, readers, reply in result.refusing:
        out.print(
            label(
                "refusing us:",
                "yellow",
                f"{domain} refused {readers} readers for policy or reputation ('{reply}'): "
                "a blocklisting or a reputation problem to raise with that organization, "
                "not dead mailboxes.",
            ),
            soft_wrap=True,
        )
    failures(result.failures, result.suppressed_since)


def decisions(decisions: list[Decision], moment: datetime, *, claim: bool, dry_run: bool) -> None:
    """Dispatch's table: what it decided for each bulletin, and why."""
    from mailer.dispatch import Action

    mode = " (claim only)" if claim else " (dry run)" if dry_run else ""
    table = Table(title=f"dispatch at {moment.isoformat(timespec='minutes')}{mode}")
    for column in ("bulletin", "decision", "detail"):
        table.add_column(column, overflow="fold")
    for decision in decisions:
        action = str(decision.action)
        if decision.action is Action.DUE:
            action = "claimed" if claim else "would send" if dry_run else action
        table.add_row(decision.issue, action, decision.detail)
    if not decisions:
        table.add_row("(none)", "", "no bulletins found")
    out.print(table)
    for decision in decisions:
        if decision.preview is not None:
            line(decision.preview.mbox)
            line(decision.preview.page)


def suppressed(result: Added, unreadable: list[str]) -> None:
    """What ``mailer unsubscribe`` did with each address."""
    for address in result.added:
        out.print(f"suppressed: {address}")
    for address in result.already:
        out.print(f"already suppressed: {address}")
    for address, why in result.refused:
        err.print(f"not suppressed: {address!r}: {why}.")
    for text in unreadable:
        err.print(label("skipped:", "yellow", text), soft_wrap=True)


def bounces(report: BounceReport) -> None:
    table = Table(title=f"{report.read} message(s) read")
    for column in ("issue", "recipient", "bounce"):
        table.add_column(column)
    for bounce in report.bounces:
        table.add_row(bounce.issue, bounce.recipient, bounce.detail)
    out.print(table)
    if report.duplicates:
        out.print(f"{report.duplicates} bounce(s) were already recorded.")
    for text in report.unattributed:
        err.print(label("not attributed:", "yellow", text), soft_wrap=True)
    for text in report.skipped:
        err.print(label("skipped:", "yellow", text), soft_wrap=True)
    for text in report.ignored:
        out.print(label("not a report:", "cyan", text), soft_wrap=True)
    for address in report.suppressed.added:
        out.print(f"suppressed: {address}")


def published(result: Published) -> None:
    issues = ", ".join(result.issues) or "none yet"
    out.print(f"Published issues: {issues}. {len(result.files)} files in {result.out}.")
    line(result.out / "index.html")


def synced(results: list[SourceResult | InboxResult]) -> None:
    table = Table(title="sync")
    for column in ("source", "suppressed", "already", "refused", "read"):
        table.add_column(column)
    for result in results:
        table.add_row(
            result.name,
            str(len(result.added)),
            str(result.already),
            str(len(result.refused)),
            "no" if result.error else "yes",
        )
    out.print(table)
    for result in results:
        for effect, count in result.effects.items():
            out.print(f"{result.name}: {count} × {effect}")
        for problem in result.problems:
            err.print(label("skipped:", "yellow", f"{result.name}: {problem}"), soft_wrap=True)
        for note in result.notes:
            out.print(label("note:", "cyan", f"{result.name}: {note}"), soft_wrap=True)
        if result.error:
            error(f"{result.name}: {result.error}")
    for address in (a for r in results for a in r.added):
        out.print(f"suppressed: {address}")


def dkim_key(private: object, record: str, domain: str, selector: str) -> None:
    out.print(f"Private key: {private} (keep it secret; never commit it)")
    out.print("Publish this DNS record:")
    line(record)
    line(
        f"Then set MAILER_DKIM_DOMAIN={domain} MAILER_DKIM_SELECTOR={selector} "
        f"MAILER_DKIM_KEY_FILE={private}"
    )


def checked(job: Job, report: CheckReport, relay: list[str]) -> None:
    """``mailer check``: its warnings, each variant's sizes and the one-line verdict."""
    for text in report.warnings:
        warning(text)
    total = sum(report.variants.values())
    table = Table(title=f"{job.bulletin.id}: variants")
    for column in ("variant (segments · language)", "recipients", "HTML", "whole message"):
        table.add_column(column, justify="left" if column.startswith("variant") else "right")
    for key, count in report.variants.items():
        table.add_row(
            key.label(),
            str(count),
            _kb(report.sizes[key]),
            _kb(report.message_sizes[key]),
        )
    out.print(table)
    for text in relay:
        line(text)
    out.print(
        f"{job.bulletin.id}: OK. {len(job.bulletin.items)} items, {total} recipients, "
        f"{len(report.variants)} variants (largest HTML "
        f"{_kb(max(report.sizes.values(), default=0))}, largest message "
        f"{_kb(max(report.message_sizes.values(), default=0))})."
    )


def translations(bulletin: Bulletin, found: list[Translation]) -> None:
    """Item × language: where each translation stands against its English item."""
    languages = list(dict.fromkeys(t.language for t in found))  # the bulletin's order
    table = Table(title=f"{bulletin.id}: translations")
    table.add_column("item")
    for language in languages:
        table.add_column(language)
    styles = {"current": "green", "stale": "bold red", "unstamped": "yellow", "missing": "dim"}
    for item in bulletin.items:
        states = {t.language: str(t.state) for t in found if t.item is item}
        table.add_row(
            item.slug, *(Text(states[lang], style=styles[states[lang]]) for lang in languages)
        )
    out.print(table)


def fallbacks(job: Job) -> None:
    """After a send with --allow-stale-translations: who got which item in English."""
    for translation in job.fallbacks:
        readers = sum(1 for r in job.recipients if r.language == translation.language)
        warning(
            f"{translation.name} is stale: its {readers} reader(s) in '{translation.language}' "
            "got the English item."
        )


def _kb(size: int) -> str:
    """One rounding for every size ``check`` prints: the table and its summary agree."""
    return f"{size / 1024:,.0f} KB"


def new_issue(made: NewIssue) -> None:
    """What ``mailer new`` wrote and what to do next."""
    source = f" from {made.copied_from}" if made.copied_from else ""
    line(f"Created {made.folder}{source}: bulletin.yaml and {len(made.items)} draft item(s).")
    for path in made.items:
        line(f"  {path}")
    line(
        f"Next: edit bulletin.yaml (its EDIT lines and send_at) and each item (delete its "
        f"'draft: true' line, or the file), then: mailer check {made.folder}"
    )


def hygiene_addresses(report: HealthReport) -> None:
    """``mailer report --addresses``: who is behind the hygiene counts (the terminal
    only; the page and the JSON hold counts)."""
    for title, found in (
        ("one soft bounce short of the limit", report.near_soft_limit_addresses),
        ("on the lists, never reached by an issue", report.never_reached_addresses),
    ):
        line(f"{title}: {len(found)}")
        for address in found:
            line(f"  {address}")
