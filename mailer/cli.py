"""The command line: parse arguments, call the pipeline, print, pick the exit code.

Exit codes: 0 all good; 1 some recipient failed, was deferred or is in doubt;
2 bad input or configuration (nothing was sent or written).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
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

from mailer import pipeline
from mailer.delivery import Report
from mailer.errors import MailerError
from mailer.ledger import Ledger
from mailer.settings import Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compose, preview and send a secretariat's email bulletin.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

T = TypeVar("T")

BulletinArg = Annotated[
    Path, typer.Argument(help="The bulletin folder, e.g. bulletins/2017-03.", show_default=False)
]
RecipientsOpt = Annotated[
    Path | None,
    typer.Option("--recipients", help="Recipients folder [default: MAILER_RECIPIENTS_DIR]."),
]
SkipInvalidOpt = Annotated[
    bool, typer.Option("--skip-invalid", help="Leave bad recipient rows out (each is listed).")
]


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """A MailerError inside becomes one clear paragraph and its exit code."""
    try:
        yield
    except MailerError as exc:
        describe = getattr(exc, "describe", None)
        text = describe() if callable(describe) else str(exc)
        err.print(f"[bold red]error:[/] {text}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action`` under :func:`_reported`."""
    with _reported():
        return action()


def _settings() -> Settings:
    return _guarded(load_settings)


@app.command()
def send(
    bulletin: BulletinArg,
    segment: Annotated[
        list[str] | None, typer.Option("--segment", help="Only this segment (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send nothing; write an mbox and a preview page.")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Dry-run output folder [default: previews/].")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="At most N messages.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    test_to: Annotated[
        str | None,
        typer.Option("--test-to", help="Send one message of each variant to this address only."),
    ] = None,
    recipients: RecipientsOpt = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Send BULLETIN to its segments (resuming where a run stopped), or preview it."""
    settings = _settings()
    job = _guarded(
        lambda: pipeline.prepare(
            bulletin,
            settings,
            recipients_dir=recipients,
            segments=segment or (),
            skip_invalid=skip_invalid,
            dry_run=dry_run,
            limit=limit,
        )
    )
    _print_skipped(job)
    if dry_run:
        _dry_run(job, out_dir or settings.preview_dir)
    elif test_to is not None:
        _test_send(job, settings, test_to)
    else:
        _real_send(job, settings, yes)


def _dry_run(job: pipeline.Job, out_dir: Path) -> None:
    result = _guarded(lambda: pipeline.preview(job, out_dir))
    table = Table(title=f"Dry run of {job.bulletin.id}: nothing was sent")
    table.add_column("variant (segments · language)")
    table.add_column("messages", justify="right")
    for summary in result.variants.values():
        table.add_row(summary.key.label(), str(summary.count))
    table.add_row("[bold]total[/]", f"[bold]{result.messages}[/]")
    out.print(table)
    counts = ", ".join(f"{s}: {n}" for s, n in job.recipients.per_segment.items())
    out.print(f"Per segment: {counts}; suppressed: {job.recipients.suppressed}.")
    if job.composer.identity.placeholder:
        out.print(
            f"MAILER_FROM is not set: using the placeholder {job.composer.identity.from_header}."
        )
    out.print(str(result.mbox), soft_wrap=True)
    out.print(str(result.page), soft_wrap=True)


def _test_send(job: pipeline.Job, settings: Settings, address: str) -> None:
    checked = _guarded(lambda: pipeline.validate_test_address(address))
    report = _guarded(lambda: pipeline.send_test_messages(job, settings, checked))
    out.print(
        f"Test send to {checked}: {report.total.sent} of "
        f"{report.total.sent + report.total.failed + report.total.deferred} variant(s) accepted "
        "(subject marked [TEST]; nothing recorded in the ledger)."
    )
    for record in report.failures:
        err.print(f"[red]{record.outcome}:[/] {record.code or ''} {record.reply or ''}")
    raise typer.Exit(0 if report.complete else 1)


def _real_send(job: pipeline.Job, settings: Settings, yes: bool) -> None:
    with _reported(), pipeline.open_ledger(job, settings) as ledger:
        plan = pipeline.plan(job, ledger.state())
        table = Table(title=f"{job.bulletin.id}: to send now")
        table.add_column("segment")
        table.add_column("recipients", justify="right")
        for name in job.recipients.segments:
            table.add_row(name, str(plan.pending.get(name, 0)))
        out.print(table)
        if plan.done:
            out.print(f"{plan.done} recipient(s) already done in an earlier run: skipped.")
        if plan.in_doubt:
            out.print(
                f"[yellow]{plan.in_doubt} recipient(s) in doubt[/] (a run stopped while their "
                "message was in flight): they are sent again and may get it twice."
            )
        if plan.pending_total == 0:
            out.print("Nothing to send.")
            raise typer.Exit(_exit_code(job, settings))
        if not yes:
            if not sys.stdin.isatty():
                err.print("error: not a terminal, so nothing to confirm with: pass --yes.")
                raise typer.Exit(2)
            if not typer.confirm(f"Send {plan.pending_total} messages?", default=False):
                out.print("Nothing sent.")
                raise typer.Exit(0)
        report = _send_with_progress(job, settings, ledger, plan)
    _print_report(job, report)
    raise typer.Exit(_exit_code(job, settings))


def _send_with_progress(
    job: pipeline.Job, settings: Settings, ledger: Ledger, plan: pipeline.Plan
) -> Report:
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
        task = bar.add_task("sending", total=plan.pending_total, sent=0, failed=0, deferred=0)
        tally = {"sent": 0, "failed": 0, "deferred": 0}

        def progress(outcome: str, _: object) -> None:
            tally[outcome] += 1
            bar.update(
                task,
                advance=1,
                sent=tally["sent"],
                failed=tally["failed"],
                deferred=tally["deferred"],
            )

        return _guarded(
            lambda: pipeline.deliver(job, settings, ledger, plan.state, progress=progress)
        )


class _RateColumn(ProgressColumn):
    """Messages per second (rich's speed column is for bytes)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} msg/s")


def _print_report(job: pipeline.Job, report: Report) -> None:
    table = Table(title=f"{job.bulletin.id}: this run")
    for column in ("segment", "sent", "failed", "deferred"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for name, tally in report.per_segment.items():
        table.add_row(name, str(tally.sent), str(tally.failed), str(tally.deferred))
    t = report.total
    table.add_row("[bold]all (each address once)[/]", str(t.sent), str(t.failed), str(t.deferred))
    out.print(table)
    for record in report.failures[:20]:
        out.print(
            f"  {record.outcome}: {record.recipient}: {record.code or ''} {record.reply or ''}"
        )
    if len(report.failures) > 20:
        out.print(f"  … and {len(report.failures) - 20} more: see mailer status.")
    if report.in_doubt:
        out.print(
            f"Resent {len(report.in_doubt)} in-doubt recipient(s) (they may get it twice): "
            + ", ".join(report.in_doubt[:10])
        )
    if report.stopped:
        out.print(f"[yellow]Stopped:[/] {report.stopped}")


def _exit_code(job: pipeline.Job, settings: Settings) -> int:
    """0 only when every current recipient of the issue is sent."""
    total = pipeline.status(job, settings).total
    return 0 if total["sent"] == sum(total.values()) else 1


@app.command()
def status(
    bulletin: BulletinArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON.")] = False,
    recipients: RecipientsOpt = None,
) -> None:
    """Per segment: how many sent, failed, deferred and pending."""
    settings = _settings()
    job = _guarded(lambda: pipeline.prepare(bulletin, settings, recipients_dir=recipients))
    result = pipeline.status(job, settings)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
        return
    table = Table(title=f"{job.bulletin.id}: status")
    for column in ("segment", "sent", "failed", "deferred", "pending"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for name, counts in result.segments.items():
        table.add_row(name, *(str(counts[k]) for k in ("sent", "failed", "deferred", "pending")))
    table.add_row(
        "[bold]all (each address once)[/]",
        *(str(result.total[k]) for k in ("sent", "failed", "deferred", "pending")),
    )
    out.print(table)
    if result.in_doubt:
        out.print(f"{result.in_doubt} pending recipient(s) are in doubt (a run stopped mid-send).")
    for record in result.failures:
        out.print(
            f"  {record.outcome}: {record.recipient}: {record.code or ''} {record.reply or ''}"
        )


@app.command()
def check(
    bulletin: BulletinArg,
    recipients: RecipientsOpt = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Validate content, recipients, templates and settings; write and send nothing."""
    settings = _settings()
    job = _guarded(
        lambda: pipeline.prepare(
            bulletin, settings, recipients_dir=recipients, skip_invalid=skip_invalid
        )
    )
    report = _guarded(lambda: pipeline.check(job, settings))
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    total = sum(report.variants.values())
    out.print(
        f"{job.bulletin.id}: OK. {len(job.bulletin.items)} items, {total} recipients, "
        f"{len(report.variants)} variants (largest HTML "
        f"{max(report.sizes.values(), default=0) // 1024} KB)."
    )


def _print_skipped(job: pipeline.Job) -> None:
    for problem in job.recipients.skipped:
        err.print(f"[yellow]skipped:[/] {problem.describe()}", soft_wrap=True)
    for problem in job.recipients.warnings:
        err.print(f"[yellow]warning:[/] {problem.describe()}", soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mailer")
    sys.exit(0)
