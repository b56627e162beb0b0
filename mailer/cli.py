"""The command line: parse arguments, call the pipeline, print, pick the exit code.

Exit codes: 0 all good; 1 some recipient failed, was deferred or is in doubt;
2 bad input or configuration (nothing was sent or written).
"""

from __future__ import annotations

import importlib
import json
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
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

from mailer.errors import DeliveryError, InputError, MailerError


class _Stage:
    """A pipeline module imported on first use: ``mailer --help`` (and every command)
    loads only the stages it runs, not premailer, lxml, cryptography, aiosmtplib…"""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


if TYPE_CHECKING:
    from mailer import archive, checks, delivery, pipeline, signing, suppressions, verp
    from mailer import bounces as bounce_reader
    from mailer import dispatch as dispatcher
    from mailer import issue as issues
    from mailer import publish as publisher
    from mailer import serve as endpoint
    from mailer import settings as settings_module
    from mailer import status as standing
    from mailer import sync as syncing
    from mailer import unsubscribe as unsubscribing
    from mailer.delivery import Report
    from mailer.ledger import Ledger, Record
    from mailer.settings import Settings
else:
    settings_module = _Stage("mailer.settings")
    archive = _Stage("mailer.archive")
    bounce_reader = _Stage("mailer.bounces")
    checks = _Stage("mailer.checks")
    delivery = _Stage("mailer.delivery")
    pipeline = _Stage("mailer.pipeline")
    signing = _Stage("mailer.signing")
    suppressions = _Stage("mailer.suppressions")
    verp = _Stage("mailer.verp")
    dispatcher = _Stage("mailer.dispatch")
    issues = _Stage("mailer.issue")
    publisher = _Stage("mailer.publish")
    endpoint = _Stage("mailer.serve")
    syncing = _Stage("mailer.sync")
    standing = _Stage("mailer.status")
    unsubscribing = _Stage("mailer.unsubscribe")


class _Commands(typer.core.TyperGroup):
    """Every command runs under one handler: a MailerError anywhere becomes one clear
    paragraph and its exit code (the commands themselves only parse, call and print)."""

    def invoke(self, ctx: Any) -> Any:  # click's Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            err.print(_label("error:", "bold red", exc.describe()), soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    # Plain click help: typer's rich help imports rich.markdown and markdown-it
    # (about 50 ms), and rich tracebacks would print local variables (settings).
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Compose, preview and send a secretariat's email bulletin.",
)
# Markup off: replies, links, names and Message-IDs come from outside, and a
# "[/]" in one of them must print as it is, not crash or vanish. Styles are
# applied with Text (see _label).
out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False, markup=False)


def _label(label: str, style: str, rest: object) -> Text:
    """``label`` styled, then ``rest`` as plain text."""
    return Text.assemble((label, style), " ", str(rest))


def _bold(text: object) -> Text:
    return Text(str(text), style="bold")


BulletinArg = Annotated[
    Path, typer.Argument(help="The bulletin folder, e.g. bulletins/2017-03.", show_default=False)
]
RecipientsOpt = Annotated[
    Path | None,
    typer.Option(
        "--recipients",
        help="Recipients folder.",
        show_default="MAILER_RECIPIENTS_DIR, else recipients/",
    ),
]
AllowStaleSyncOpt = Annotated[
    bool,
    typer.Option(
        "--allow-stale-sync",
        help="Send although the unsubscribe endpoint was not synced within MAILER_SYNC_MAX_AGE.",
    ),
]
SkipInvalidOpt = Annotated[
    bool, typer.Option("--skip-invalid", help="Leave bad recipient rows out (each is listed).")
]


def _settings() -> Settings:
    return settings_module.load_settings()


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
        Path | None,
        typer.Option(
            "--out",
            help="Dry-run output folder.",
            show_default="MAILER_PREVIEW_DIR, else previews/",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="At most N messages.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    test_to: Annotated[
        str | None,
        typer.Option("--test-to", help="Send one message of each variant to this address only."),
    ] = None,
    recipients: RecipientsOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    allow_mass_suppression: Annotated[
        bool,
        typer.Option(
            "--allow-mass-suppression",
            help="Suppress every address refused as a dead mailbox, even beyond 5% of the list.",
        ),
    ] = False,
    allow_stale_sync: AllowStaleSyncOpt = False,
) -> None:
    """Send BULLETIN to its segments (resuming where a run stopped), or preview it."""
    settings = _settings()
    job = pipeline.prepare(
        bulletin,
        settings,
        recipients_dir=recipients,
        segments=segment or (),
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        limit=limit,
    )
    _print_skipped(job)
    if dry_run:
        _dry_run(job, out_dir or settings.preview_dir)
    elif test_to is not None:
        _test_send(job, settings, test_to)
    else:
        if not allow_stale_sync:
            (syncing.require_fresh(settings))
        _real_send(job, settings, yes, allow_mass_suppression)


def _dry_run(job: pipeline.Job, out_dir: Path) -> None:
    result = pipeline.preview(job, out_dir)
    table = Table(title=f"Dry run of {job.bulletin.id}: nothing was sent")
    table.add_column("variant (segments · language)")
    table.add_column("messages", justify="right")
    for summary in result.variants.values():
        table.add_row(summary.key.label(), str(summary.count))
    table.add_row(_bold("total"), _bold(result.messages))
    out.print(table)
    counts = ", ".join(f"{s}: {n}" for s, n in job.recipients.per_segment.items())
    out.print(f"Per segment: {counts}; suppressed: {job.recipients.suppressed}.")
    if job.composer.identity.placeholder:
        out.print(
            f"MAILER_FROM is not set: using the placeholder {job.composer.identity.from_header}."
        )
    out.print(str(result.mbox), soft_wrap=True)
    out.print(str(result.page), soft_wrap=True)


def _warn_dead_archive_links(job: pipeline.Job) -> None:
    """For check and --test-to: before send_at the pages may not be published yet."""
    dead = archive.missing(archive.archive_urls(job.composer, job.recipients), wait=0)
    if dead:
        err.print(
            _label(
                "warning:",
                "yellow",
                f"the web archive does not serve {len(dead)} address(es) the messages link to "
                f"yet (first: {dead[0]}); a real send refuses until it does.",
            ),
            soft_wrap=True,
        )


def _test_send(job: pipeline.Job, settings: Settings, address: str) -> None:
    checked = pipeline.validate_test_address(address)
    if settings.archive_url:
        _warn_dead_archive_links(job)
    report = pipeline.send_test_messages(job, settings, checked)
    out.print(
        f"Test send to {checked}: {report.total.sent} of "
        f"{report.total.sent + report.total.failed + report.total.deferred} variant(s) accepted "
        "(subject marked [TEST]; nothing recorded in the ledger)."
    )
    for record in report.failures:
        err.print(_label(f"{record.outcome}:", "red", f"{record.code or ''} {record.reply or ''}"))
    raise typer.Exit(0 if report.complete else 1)


def _real_send(job: pipeline.Job, settings: Settings, yes: bool, allow_many: bool) -> None:
    with pipeline.open_ledger(job, settings) as ledger:
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
                f"{plan.in_doubt} recipient(s) in doubt (a run stopped while their "
                "message was in flight): they are sent again and may get it twice."
            )
        if plan.pending_total == 0:
            out.print("Nothing to send.")
            leftover = delivery.Report()
            pipeline.suppress_dead_mailboxes(job, plan.state, leftover, allow_many=allow_many)
            _print_suppressions(leftover)
            raise typer.Exit(standing.exit_code(job, settings))
        if settings.archive_url:  # before asking: a send never goes out with dead links
            out.print("Checking that the web archive serves what the messages link to…")
            archive.require_live(job.composer, job.recipients, settings.archive_wait)
        if not yes:
            _confirm(f"Send {plan.pending_total} messages?")
        try:
            report = _send_with_progress(job, settings, ledger, plan, allow_many)
        except DeliveryError as exc:
            if isinstance(exc.report, delivery.Report):
                exc.report.stopped = None  # the error below says why
                _print_report(job, exc.report)
            raise
    _print_report(job, report)
    raise typer.Exit(standing.exit_code(job, settings, report))


def _send_with_progress(
    job: pipeline.Job, settings: Settings, ledger: Ledger, plan: pipeline.Plan, allow_many: bool
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

        return pipeline.deliver(
            job, settings, ledger, plan.state, progress=progress, allow_many=allow_many
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
    table.add_row(_bold("all (each address once)"), str(t.sent), str(t.failed), str(t.deferred))
    out.print(table)
    _print_failures(report.failures[:20])
    if len(report.failures) > 20:
        out.print(f"  … and {len(report.failures) - 20} more: see mailer status.")
    if report.in_doubt:
        out.print(
            f"Resent {len(report.in_doubt)} in-doubt recipient(s) (they may get it twice): "
            + ", ".join(report.in_doubt[:10])
        )
    _print_suppressions(report)
    if report.stopped:
        out.print(_label("Stopped:", "yellow", report.stopped))


def _print_suppressions(report: Report) -> None:
    if report.suppressed:
        out.print(
            f"Added to suppressions (no such mailbox): {', '.join(report.suppressed[:10])}"
            + (" …" if len(report.suppressed) > 10 else "")
        )
    if report.suppression_withheld:
        count = len(report.suppression_withheld)
        err.print(
            f"warning: {count} addresses were refused as dead mailboxes: more than "
            "one run suppresses on its own (5% of the list, at least 20). None was suppressed: "
            "a relay that refuses everyone is likelier than that many dead mailboxes. Check "
            "`mailer status`; if they really are gone, run the same send command again with "
            "--allow-mass-suppression (it sends nothing more).",
            soft_wrap=True,
        )


@app.command()
def status(
    bulletin: BulletinArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON.")] = False,
    recipients: RecipientsOpt = None,
) -> None:
    """Per segment: how many sent, failed, deferred and pending."""
    settings = _settings()
    job = issues.load_issue(bulletin, settings, recipients_dir=recipients)
    result = standing.status(job, settings)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
        return
    table = Table(title=f"{job.bulletin.id}: status")
    for column in ("segment", "sent", "failed", "deferred", "pending"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for name, counts in result.segments.items():
        table.add_row(name, *(str(counts[k]) for k in ("sent", "failed", "deferred", "pending")))
    table.add_row(
        _bold("all (each address once)"),
        *(str(result.total[k]) for k in ("sent", "failed", "deferred", "pending")),
    )
    out.print(table)
    if result.in_doubt:
        out.print(f"{result.in_doubt} pending recipient(s) are in doubt (a run stopped mid-send).")
    if job.recipients.suppressed:
        out.print(
            f"{job.recipients.suppressed} address(es) of the lists are in suppressions.csv "
            "(unsubscribed or bounced): never mailed."
        )
    if any(result.bounces.values()):
        b = result.bounces
        out.print(
            f"Returned later: {b['hard']} dead address(es) (suppressed), {b['soft']} soft "
            f"bounce(s), {b['refused']} refused for policy or reputation (never suppressed)."
        )
    for domain, readers, reply in result.refusing:
        out.print(
            _label(
                "refusing us:",
                "yellow",
                f"{domain} refused {readers} readers for policy or reputation ('{reply}'): "
                "a blocklisting or a reputation problem to raise with that organization, "
                "not dead mailboxes.",
            ),
            soft_wrap=True,
        )
    _print_failures(result.failures, result.suppressed_since)


@app.command()
def dispatch(
    now: Annotated[
        str | None,
        typer.Option("--now", help="Decide as if it were this moment (ISO 8601, with zone)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send nothing; preview what would go out.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    claim: Annotated[
        bool, typer.Option("--claim", help="Only record this run's claim on due bulletins.")
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="The scheduled run's id: claims are recorded under it."),
    ] = None,
    only: Annotated[
        str | None, typer.Option("--only", help="Consider only this bulletin id.")
    ] = None,
    force: Annotated[
        str | None,
        typer.Option("--force", help="Release a dangling claim on this bulletin id first."),
    ] = None,
    bulletins: Annotated[
        Path, typer.Option("--bulletins", help="Folder of bulletin folders.")
    ] = Path("bulletins"),
    recipients: RecipientsOpt = None,
    allow_stale_sync: AllowStaleSyncOpt = False,
) -> None:
    """Send every bulletin whose send_at has passed and whose send is not complete."""
    settings = _settings()
    moment = dispatcher.parse_now(now)
    if force is not None:
        (dispatcher.force_release(settings, force))
    decisions = dispatcher.decide(
        bulletins, settings, moment, only=only, recipients_dir=recipients, run=run_id
    )
    due = [d.issue for d in decisions if d.action is dispatcher.Action.DUE]
    if due and not dry_run and not allow_stale_sync:
        # Before claiming too: a claim the send then refused would block the issue.
        (syncing.require_fresh(settings))
    if claim:
        if run_id is None:
            err.print("error: --claim needs --run-id (the scheduled run's id).")
            raise typer.Exit(2)
        (dispatcher.claim(decisions, settings, run_id))
    elif dry_run:
        (dispatcher.preview_due(decisions, settings.preview_dir))
    elif due:
        if not yes:
            _confirm(f"Send {', '.join(due)} now?")
        (dispatcher.send_due(decisions, settings, run=run_id))
    _print_decisions(decisions, moment, claim=claim, dry_run=dry_run)
    raise typer.Exit(dispatcher.exit_code(decisions, settings))


def _print_decisions(
    decisions: list[dispatcher.Decision], moment: datetime, *, claim: bool, dry_run: bool
) -> None:
    mode = " (claim only)" if claim else " (dry run)" if dry_run else ""
    table = Table(title=f"dispatch at {moment.isoformat(timespec='minutes')}{mode}")
    for column in ("bulletin", "decision", "detail"):
        table.add_column(column, overflow="fold")
    for decision in decisions:
        action = str(decision.action)
        if decision.action is dispatcher.Action.DUE:
            action = "claimed" if claim else "would send" if dry_run else action
        table.add_row(decision.issue, action, decision.detail)
    if not decisions:
        table.add_row("(none)", "", "no bulletins found")
    out.print(table)
    for decision in decisions:
        if decision.preview is not None:
            out.print(str(decision.preview.mbox), soft_wrap=True)
            out.print(str(decision.preview.page), soft_wrap=True)


@app.command()
def unsubscribe(
    addresses: Annotated[
        list[str] | None, typer.Argument(help="Addresses to suppress.", show_default=False)
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept in the file).")
    ] = "unsubscribed",
    token: Annotated[
        str | None,
        typer.Option("--token", help="A one-click token (from the https unsubscribe URL)."),
    ] = None,
    from_mbox: Annotated[
        Path | None,
        typer.Option("--from-mbox", help="An mbox of requests sent to the mailto target."),
    ] = None,
    recipients: RecipientsOpt = None,
) -> None:
    """Add addresses to suppressions.csv (never mailed again), without duplicates."""
    settings = _settings()
    directory = recipients or settings.recipients_dir
    wanted = list(addresses or [])
    unreadable: list[str] = []
    if token is not None:
        wanted.append(unsubscribing.token_address(settings, token))
        reason = "one-click unsubscribe" if reason == "unsubscribed" else reason
    if from_mbox is not None:
        wanted.extend(unsubscribing.requests_in_mbox(from_mbox, unreadable))
        reason = "unsubscribe request by mail" if reason == "unsubscribed" else reason
    if not wanted:
        raise InputError("name addresses, --token or --from-mbox.", field="ADDRESS")
    result = suppressions.suppress(directory, wanted, reason)
    for address in result.added:
        out.print(f"suppressed: {address}")
    for address in result.already:
        out.print(f"already suppressed: {address}")
    for address, why in result.refused:
        err.print(f"not suppressed: {address!r}: {why}.")
    for line in unreadable:
        err.print(_label("skipped:", "yellow", line))
    if result.refused and from_mbox is None:
        raise typer.Exit(2)  # a person typed it: say so with the exit code too


@app.command()
def bounces(
    source: Annotated[
        Path,
        typer.Argument(help="An mbox file or a Maildir of bounce reports.", show_default=False),
    ],
    recipients: RecipientsOpt = None,
) -> None:
    """Read bounce reports: record them in the ledgers; suppress dead addresses."""
    settings = _settings()
    report = bounce_reader.process(
        source,
        settings.ledger_dir,
        recipients or settings.recipients_dir,
        bounce_address=settings.bounce_address,
        soft_limit=settings.bounce_soft_limit,
        key=verp.id_key(settings),
        window=settings.dispatch_window,
    )
    table = Table(title=f"{report.read} message(s) read")
    for column in ("issue", "recipient", "bounce"):
        table.add_column(column)
    for bounce in report.bounces:
        table.add_row(bounce.issue, bounce.recipient, bounce.detail)
    out.print(table)
    if report.duplicates:
        out.print(f"{report.duplicates} bounce(s) were already recorded.")
    for line in report.unattributed:
        err.print(_label("not attributed:", "yellow", line), soft_wrap=True)
    for line in report.skipped:
        err.print(_label("skipped:", "yellow", line), soft_wrap=True)
    for line in report.ignored:
        out.print(_label("not a report:", "cyan", line), soft_wrap=True)
    for address in report.suppressed.added:
        out.print(f"suppressed: {address}")


@app.command()
def publish(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where to build the site (replaced whole).")
    ] = Path("site"),
    bulletins: Annotated[
        Path, typer.Option("--bulletins", help="Folder of bulletin folders.")
    ] = Path("bulletins"),
    now: Annotated[
        str | None,
        typer.Option("--now", help="Publish what is due at this moment (ISO 8601, with zone)."),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="Also publish this bulletin id, due or not (repeatable)."),
    ] = None,
    recipients: RecipientsOpt = None,
) -> None:
    """Build the public web archive: pages, indexes, feeds, images, calendar files."""
    settings = _settings()
    if recipients is not None:
        settings = settings.model_copy(update={"recipients_dir": recipients})
    moment = dispatcher.parse_now(now)
    result = publisher.publish(bulletins, out_dir, settings, moment, include or ())
    issues = ", ".join(result.issues) or "none yet"
    out.print(f"Published issues: {issues}. {len(result.files)} files in {result.out}.")
    out.print(str(result.out / "index.html"), soft_wrap=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8025,
) -> None:
    """Run the one-click unsubscribe endpoint (RFC 8058) and its export for sync."""
    settings = _settings()
    (endpoint.create_app(settings))  # settings checked before listening
    endpoint.serve(settings, host, port)


@app.command()
def sync(recipients: RecipientsOpt = None) -> None:
    """Bring back what readers and mail servers said (endpoint, mailbox) into suppressions."""
    settings = _settings()
    results = syncing.sync(settings, recipients or settings.recipients_dir)
    if not results:
        err.print(
            "error: no source to sync: set MAILER_SERVE_URL and MAILER_SERVE_API_TOKEN, "
            "or MAILER_IMAP_HOST (and its user and password)."
        )
        raise typer.Exit(2)
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
        for effect, count in getattr(result, "effects", {}).items():
            out.print(f"{result.name}: {count} × {effect}")
        for problem in getattr(result, "problems", []):
            err.print(_label("skipped:", "yellow", f"{result.name}: {problem}"), soft_wrap=True)
        for note in getattr(result, "notes", []):
            out.print(_label("note:", "cyan", f"{result.name}: {note}"), soft_wrap=True)
        if result.error:
            err.print(
                _label("error:", "bold red", f"{result.name}: {result.error}"), soft_wrap=True
            )
    for address in (a for r in results for a in r.added):
        out.print(f"suppressed: {address}")
    if any(getattr(r, "fatal", False) for r in results):
        raise typer.Exit(2)  # a setting must change
    raise typer.Exit(1 if any(r.error for r in results) else 0)


@app.command("dkim-keygen")
def dkim_keygen(
    selector: Annotated[str, typer.Argument(help="The DKIM selector, e.g. bulletin2026.")],
    domain: Annotated[
        str | None,
        typer.Option(
            "--domain", help="Signing domain.", show_default="MAILER_DKIM_DOMAIN, else From's"
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the keys.")] = Path("dkim"),
) -> None:
    """Write a DKIM key pair and print the DNS TXT record to publish."""
    settings = _settings()
    signing_domain = signing.keygen_domain(settings, domain)
    private, record = signing.generate_key(out_dir, selector, signing_domain)
    out.print(f"Private key: {private} (keep it secret; never commit it)")
    out.print("Publish this DNS record:")
    out.print(record, soft_wrap=True)
    out.print(
        f"Then set MAILER_DKIM_DOMAIN={signing_domain} MAILER_DKIM_SELECTOR={selector} "
        f"MAILER_DKIM_KEY_FILE={private}",
        soft_wrap=True,
    )


@app.command()
def check(
    bulletin: BulletinArg,
    recipients: RecipientsOpt = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Validate content, recipients, templates and settings; write and send nothing."""
    settings = _settings()
    job = pipeline.prepare(bulletin, settings, recipients_dir=recipients, skip_invalid=skip_invalid)
    report = checks.check(job, settings)
    if settings.archive_url:
        _warn_dead_archive_links(job)
    for warning in report.warnings:
        err.print(_label("warning:", "yellow", warning), soft_wrap=True)
    total = sum(report.variants.values())
    table = Table(title=f"{job.bulletin.id}: variants")
    for column in ("variant (segments · language)", "recipients", "HTML", "whole message"):
        table.add_column(column, justify="left" if column.startswith("variant") else "right")
    for key, count in report.variants.items():
        table.add_row(
            key.label(),
            str(count),
            f"{report.sizes[key] / 1024:,.0f} KB",
            f"{report.message_sizes[key] / 1024:,.0f} KB",
        )
    out.print(table)
    for line in checks.relay_summary(settings, total):
        out.print(line, soft_wrap=True)
    out.print(
        f"{job.bulletin.id}: OK. {len(job.bulletin.items)} items, {total} recipients, "
        f"{len(report.variants)} variants (largest HTML "
        f"{max(report.sizes.values(), default=0) // 1024} KB, largest message "
        f"{max(report.message_sizes.values(), default=0) // 1024} KB)."
    )


def _interactive() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def _confirm(question: str) -> None:
    """Ask on a terminal; without one there is nobody to ask, so refuse (exit 2)."""
    if not _interactive():
        err.print("error: not a terminal, so nothing to confirm with: pass --yes.")
        raise typer.Exit(2)
    if not typer.confirm(question, default=False):
        out.print("Nothing sent.")
        raise typer.Exit(0)


def _print_failures(records: list[Record], suppressed: frozenset[str] = frozenset()) -> None:
    for record in records:
        note = " (suppressed since)" if record.recipient in suppressed else ""
        out.print(
            f"  {record.outcome}: {record.recipient}{note}: {record.code or ''} "
            f"{record.reply or ''}",
            soft_wrap=True,
        )


def _print_skipped(job: pipeline.Job) -> None:
    for problem in job.recipients.skipped:
        err.print(_label("skipped:", "yellow", problem.describe()), soft_wrap=True)
    for problem in job.recipients.warnings:
        err.print(_label("warning:", "yellow", problem.describe()), soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mailer")
    sys.exit(0)
