"""The command line: parse arguments, call the pipeline, print, pick the exit code.

Exit codes: 0 all good; 1 some recipient failed, was deferred or is in doubt;
2 bad input or configuration (nothing was sent or written).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from mailer import pipeline
from mailer.errors import MailerError
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


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a MailerError becomes one clear paragraph and its exit code."""
    try:
        return action()
    except MailerError as exc:
        describe = getattr(exc, "describe", None)
        text = describe() if callable(describe) else str(exc)
        err.print(f"[bold red]error:[/] {text}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


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
    recipients: RecipientsOpt = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Send BULLETIN to its segments, or preview it with --dry-run."""
    settings = _settings()
    if not dry_run:
        err.print(
            "error: real sending is not available in this version; "
            "use --dry-run to write the messages and the preview.",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    job = _guarded(
        lambda: pipeline.prepare(
            bulletin,
            settings,
            recipients_dir=recipients,
            segments=segment or (),
            skip_invalid=skip_invalid,
            dry_run=True,
            limit=limit,
        )
    )
    _print_skipped(job)
    result = _guarded(lambda: pipeline.preview(job, out_dir or settings.preview_dir))
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
