"""The command line: parse arguments, call the pipeline, print, pick the exit code.

Exit codes: 0 all good; 1 some recipient failed, was deferred or is in doubt;
2 bad input or configuration (nothing was sent or written); 75 a send paused at a
quota or at MAILER_SEND_BUDGET, nothing else wrong (the next run continues).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

from mailer import views
from mailer.errors import DeliveryError, InputError, MailerError

if TYPE_CHECKING:
    from mailer.settings import Settings

# Every pipeline stage is imported inside the command that runs it: ``mailer --help``
# (and every command) loads only what it uses, not premailer, lxml, cryptography,
# aiosmtplib… (tests/test_fast_start.py keeps it so).


class _Commands(typer.core.TyperGroup):
    """Every command runs under one handler: a MailerError anywhere becomes one clear
    paragraph and its exit code (the commands themselves only parse, call and print)."""

    def invoke(self, ctx: Any) -> Any:  # click's Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            views.error(exc.describe())
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    invoke_without_command=True,
    # Plain click help: typer's rich help imports rich.markdown and markdown-it
    # (about 50 ms), and rich tracebacks would print local variables (settings).
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


BulletinArg = Annotated[
    Path,
    typer.Argument(
        metavar="BULLETIN", help="The bulletin folder, e.g. bulletins/2017-03.", show_default=False
    ),
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


def _version(value: bool) -> None:
    if value:
        from mailer import __version__

        views.line(f"mailer {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Compose, preview and send a secretariat's email bulletin.

    The usual order: mailer check, then send --dry-run, send --test-to, send;
    then status, publish and sync.
    """
    if ctx.invoked_subcommand is None:  # bare `mailer`: the help, and no error
        views.line(ctx.get_help())
        raise typer.Exit(0)


def _settings() -> Settings:
    from mailer.settings import load_settings

    return load_settings()


@app.command(short_help="Start a new issue, from scratch or from the last one.")
def new(
    issue_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="The new issue's id, e.g. 2026-12.", show_default=False),
    ],
    previous: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="ID",
            help="Copy this issue's titles, segments and items (as drafts to edit).",
        ),
    ] = None,
    bulletins: Annotated[
        Path, typer.Option("--bulletins", metavar="FOLDER", help="Folder of bulletin folders.")
    ] = Path("bulletins"),
) -> None:
    """Write bulletins/ID with its bulletin.yaml filled in and draft items to edit."""
    from datetime import date

    from mailer import scaffold

    settings = _settings()
    made = scaffold.new_issue(
        bulletins,
        issue_id,
        previous=previous,
        today=date.today(),
        list_name=settings.list_display_name,
        locales=settings.locale_map,
    )
    views.new_issue(made)


@app.command(short_help="Check a bulletin, its lists and the settings; send nothing.")
def check(
    bulletin: BulletinArg,
    recipients: RecipientsOpt = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Validate content, recipients, templates and settings; write and send nothing."""
    from mailer import checks, pipeline

    settings = _settings()
    job = pipeline.prepare(bulletin, settings, recipients_dir=recipients, skip_invalid=skip_invalid)
    report = checks.check(job, settings)
    views.dead_archive_links(pipeline.dead_archive_links(job, settings))
    views.checked(job, report, checks.relay_summary(settings, sum(report.variants.values())))


@app.command(short_help="Show which translations are current, stale or missing.")
def translations(
    bulletin: BulletinArg,
    stamp: Annotated[
        list[str] | None,
        typer.Option(
            "--stamp",
            metavar="NAME",
            help="Record that this translation (SLUG.fr, or SLUG for all its languages) "
            "translates the English item as it is now; after a review (repeatable).",
        ),
    ] = None,
    recipients: RecipientsOpt = None,
) -> None:
    """Per item and language: current, stale (the English changed since), unstamped or
    missing; with --stamp, mark reviewed translations as current."""
    from mailer import translations as translating
    from mailer.bulletin import load_bulletin
    from mailer.recipients import available_segments

    segments = available_segments(recipients or _settings().recipients_dir)
    loaded = load_bulletin(bulletin, segments)
    if stamp:
        for path in translating.stamp(loaded, stamp):
            views.line(f"stamped: {path}")
        loaded = load_bulletin(bulletin, segments)
    views.translations(loaded, translating.of(loaded))


@app.command(short_help="Send a bulletin (or resume it), preview it or test it.")
def send(
    bulletin: BulletinArg,
    segment: Annotated[
        list[str] | None,
        typer.Option("--segment", metavar="SEGMENT", help="Only this segment (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send nothing; write an mbox and a preview page.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FOLDER",
            help="Dry-run output folder.",
            show_default="MAILER_PREVIEW_DIR, else previews/",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", min=0, help="At most N messages.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    test_to: Annotated[
        str | None,
        typer.Option(
            "--test-to",
            metavar="ADDRESS",
            help="Send one message of each variant to this address only.",
        ),
    ] = None,
    recipients: RecipientsOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    allow_mass_suppression: Annotated[
        bool,
        typer.Option(
            "--allow-mass-suppression",
            help="Suppress every address refused as a dead mailbox, even beyond what one "
            "run suppresses alone (5% of the list, at least 20).",
        ),
    ] = False,
    allow_stale_sync: AllowStaleSyncOpt = False,
    allow_stale_translations: Annotated[
        bool,
        typer.Option(
            "--allow-stale-translations",
            help="Send although a translation is older than its English item: those "
            "readers get the English item.",
        ),
    ] = False,
) -> None:
    """Send BULLETIN to its segments (resuming where a run stopped), or preview it."""
    from mailer import pipeline

    settings = _settings()
    job = pipeline.prepare(
        bulletin,
        settings,
        recipients_dir=recipients,
        segments=segment or (),
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        limit=limit,
        english_for_stale=allow_stale_translations,
    )
    views.skipped_rows(job.recipients)
    if dry_run:
        preview = pipeline.preview(job, out_dir or settings.preview_dir)
        views.dry_run(job, preview, pipeline.plan_now(job, settings))
        return
    if test_to is not None:
        address = pipeline.validate_test_address(test_to)
        views.dead_archive_links(pipeline.dead_archive_links(job, settings))
        report = pipeline.send_test_messages(job, settings, address)
        views.test_send(address, report)
        raise typer.Exit(0 if report.complete else 1)
    hooks = pipeline.SendHooks(
        planned=lambda plan: views.plan(job, plan),
        checking_archive=views.checking_archive,
        approve=lambda plan: yes or _ask(f"Send {plan.pending_total} messages?"),
        sending=lambda plan: views.progress_bar(plan.pending_total),
    )
    try:
        result = pipeline.real_send(
            job,
            settings,
            hooks=hooks,
            allow_many=allow_mass_suppression,
            allow_stale_sync=allow_stale_sync,
        )
    except DeliveryError as exc:
        if exc.report is not None:
            views.report(job, exc.report, stopped=False)  # the error says why
        raise
    if not result.approved:
        views.line("Nothing sent.")
    elif result.report is not None and result.plan.pending_total == 0:
        views.suppressions(result.report)
    elif result.report is not None:
        views.report(job, result.report)
    views.fallbacks(job)
    raise typer.Exit(result.exit_code)


@app.command(short_help="Show where an issue's send stands, per segment.")
def status(
    bulletin: BulletinArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON.")] = False,
    recipients: RecipientsOpt = None,
) -> None:
    """Per segment: how many sent, failed, deferred and pending."""
    from mailer import issue
    from mailer import status as standing

    settings = _settings()
    job = issue.load_issue(bulletin, settings, recipients_dir=recipients)
    result = standing.status(job, settings)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
    else:
        views.status(job, result)


@app.command(short_help="Build the public web archive of the issues that are due.")
def publish(
    out_dir: Annotated[
        Path,
        typer.Option("--out", metavar="FOLDER", help="Where to build the site (replaced whole)."),
    ] = Path("site"),
    bulletins: Annotated[
        Path, typer.Option("--bulletins", metavar="FOLDER", help="Folder of bulletin folders.")
    ] = Path("bulletins"),
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            metavar="MOMENT",
            help="Publish what is due at this moment (ISO 8601, with zone).",
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            metavar="ID",
            help="Also publish this bulletin id, due or not (repeatable).",
        ),
    ] = None,
    recipients: RecipientsOpt = None,
) -> None:
    """Build the public web archive: pages, indexes, feeds, images, calendar files."""
    from mailer import dispatch as dispatcher
    from mailer import publish as publisher

    settings = _settings()
    if recipients is not None:
        settings = settings.model_copy(update={"recipients_dir": recipients})
    moment = dispatcher.parse_now(now)
    views.published(publisher.publish(bulletins, out_dir, settings, moment, include or ()))


@app.command(short_help="Send every scheduled issue that is due (the workflow's job).")
def dispatch(
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            metavar="MOMENT",
            help="Decide as if it were this moment (ISO 8601, with zone).",
        ),
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
        typer.Option(
            "--run-id", metavar="RUN", help="The scheduled run's id: claims are recorded under it."
        ),
    ] = None,
    only: Annotated[
        str | None, typer.Option("--only", metavar="ID", help="Consider only this bulletin id.")
    ] = None,
    force: Annotated[
        str | None,
        typer.Option(
            "--force", metavar="ID", help="Release a dangling claim on this bulletin id first."
        ),
    ] = None,
    bulletins: Annotated[
        Path, typer.Option("--bulletins", metavar="FOLDER", help="Folder of bulletin folders.")
    ] = Path("bulletins"),
    recipients: RecipientsOpt = None,
    allow_stale_sync: AllowStaleSyncOpt = False,
) -> None:
    """Send every bulletin whose send_at has passed and whose send is not complete."""
    from mailer import dispatch as dispatcher

    settings = _settings()
    moment = dispatcher.parse_now(now)
    decisions = dispatcher.run(
        bulletins,
        settings,
        moment,
        approve=lambda due: yes or _ask(f"Send {', '.join(due)} now?") or _nothing_sent(),
        only=only,
        recipients_dir=recipients,
        run_id=run_id,
        claim_only=claim,
        dry_run=dry_run,
        force=force,
        allow_stale_sync=allow_stale_sync,
    )
    views.decisions(decisions, moment, claim=claim, dry_run=dry_run)
    raise typer.Exit(dispatcher.exit_code(decisions, settings))


@app.command(short_help="Run the one-click unsubscribe endpoint.")
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Address to listen on.",
            show_default="MAILER_UNSUBSCRIBE_URL's when it is local, else 127.0.0.1",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            metavar="PORT",
            min=1,
            max=65535,
            help="Port to listen on.",
            show_default="MAILER_UNSUBSCRIBE_URL's when it is local, else 8058",
        ),
    ] = None,
) -> None:
    """Run the one-click unsubscribe endpoint (RFC 8058) and its export for sync."""
    from mailer import serve as endpoint

    endpoint.serve(_settings(), host, port, say=views.line, warn=views.warning)


@app.command(short_help="Bring back unsubscribes and bounces into suppressions.csv.")
def sync(recipients: RecipientsOpt = None) -> None:
    """Bring back what readers and mail servers said (endpoint, mailbox) into suppressions."""
    from mailer import sync as syncing

    settings = _settings()
    results = syncing.sync(settings, recipients or settings.recipients_dir)
    views.synced(results)
    raise typer.Exit(syncing.exit_code(results))


@app.command(short_help="Write the list's health report: issues, trends, failing domains.")
def report(
    out: Annotated[
        Path, typer.Option("--out", metavar="FILE", help="Where to write the page.")
    ] = Path("reports/health.html"),
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="DATE", help="Only issues first sent on or after it."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON only.")
    ] = False,
    as_markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the key figures as a Markdown table only.")
    ] = False,
    run: Annotated[
        str | None,
        typer.Option("--run", metavar="RUN", help="Only the issues this scheduled run touched."),
    ] = None,
    segment: Annotated[
        list[str] | None,
        typer.Option(
            "--segment", metavar="SEGMENT", help="Only this segment's readers (repeatable)."
        ),
    ] = None,
    addresses: Annotated[
        bool,
        typer.Option(
            "--addresses",
            help="Also print the addresses behind the hygiene counts, for staff to clean up "
            "(never written to the page).",
        ),
    ] = False,
    recipients: RecipientsOpt = None,
) -> None:
    """One self-contained page (no network, no script): per issue, trends across issues,
    where mail fails, and the list's hygiene; counts and domains only."""
    from datetime import date

    from mailer import report as reporting

    settings = _settings()
    start = None
    if since is not None:
        try:
            start = date.fromisoformat(since)
        except ValueError:
            raise InputError(f"'{since}' is not a date (YYYY-MM-DD).", field="--since") from None
    from mailer.recipients import available_segments
    from mailer.sync import load_state

    known = available_segments(recipients or settings.recipients_dir)
    for name in segment or ():
        if name not in known:
            raise InputError(
                f"'{name}' is not a segment (the lists hold: {', '.join(known) or 'none'}).",
                field="--segment",
            )
    built = reporting.build(
        settings.ledger_dir,
        recipients or settings.recipients_dir,
        start,
        load_state(settings),
        settings.bounce_soft_limit,
        frozenset(segment or ()),
    )
    if as_json:
        sys.stdout.write(json.dumps(built.as_json(), indent=2) + "\n")
        return
    if as_markdown:
        only = reporting.touched_by(settings.ledger_dir, run) if run is not None else None
        sys.stdout.write(reporting.markdown(built, only))
        return
    page = reporting.render(built, settings.list_display_name, settings.templates_dir, date.today())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    views.line(f"List health: {len(built.issues)} issue(s). {out}")
    if addresses:
        views.hygiene_addresses(built)


@app.command(short_help="Read bounce reports from an mbox or a Maildir.")
def bounces(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="MBOX_OR_MAILDIR",
            help="An mbox file or a Maildir of bounce reports.",
            show_default=False,
        ),
    ],
    recipients: RecipientsOpt = None,
) -> None:
    """Read bounce reports: record them in the ledgers; suppress dead addresses."""
    from mailer import bounces as bounce_reader

    settings = _settings()
    views.bounces(bounce_reader.process_source(source, settings, recipients))


@app.command(short_help="Add addresses to suppressions.csv by hand.")
def unsubscribe(
    addresses: Annotated[
        list[str] | None,
        typer.Argument(metavar="ADDRESS...", help="Addresses to suppress.", show_default=False),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why (kept in the file).")
    ] = "unsubscribed",
    token: Annotated[
        str | None,
        typer.Option(
            "--token", metavar="TOKEN", help="A one-click token (from the https unsubscribe URL)."
        ),
    ] = None,
    from_mbox: Annotated[
        Path | None,
        typer.Option(
            "--from-mbox", metavar="MBOX", help="An mbox of requests sent to the mailto target."
        ),
    ] = None,
    recipients: RecipientsOpt = None,
) -> None:
    """Add addresses to suppressions.csv (never mailed again), without duplicates."""
    from mailer import suppressions
    from mailer import unsubscribe as unsubscribing

    settings = _settings()
    request = unsubscribing.by_hand(
        settings, addresses or [], reason=reason, token=token, mbox=from_mbox
    )
    result = suppressions.suppress(
        recipients or settings.recipients_dir, request.addresses, request.reason
    )
    views.suppressed(result, request.unreadable)
    raise typer.Exit(request.exit_code(result))


@app.command("dkim-keygen", short_help="Make a DKIM key pair and print its DNS record.")
def dkim_keygen(
    selector: Annotated[
        str, typer.Argument(metavar="SELECTOR", help="The DKIM selector, e.g. bulletin2026.")
    ],
    domain: Annotated[
        str | None,
        typer.Option(
            "--domain",
            metavar="DOMAIN",
            help="Signing domain.",
            show_default="MAILER_DKIM_DOMAIN, else From's",
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="FOLDER", help="Where to write the keys.")
    ] = Path("dkim"),
) -> None:
    """Write a DKIM key pair and print the DNS TXT record to publish."""
    from mailer import signing

    signing_domain = signing.keygen_domain(_settings(), domain)
    private, record = signing.generate_key(out_dir, selector, signing_domain)
    views.dkim_key(private, record, signing_domain, selector)


def _interactive() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def _ask(question: str) -> bool:
    """Ask on a terminal; without one there is nobody to ask, so refuse (exit 2)."""
    if not _interactive():
        raise InputError("not a terminal, so nothing to confirm with: pass --yes.")
    return typer.confirm(question, default=False)


def _nothing_sent() -> bool:
    """The person said no: say so and stop (exit 0), before any table."""
    views.line("Nothing sent.")
    raise typer.Exit(0)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mailer")  # exits with the command's code
