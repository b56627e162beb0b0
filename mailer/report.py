"""The list's health over time, from the ledgers and ``suppressions.csv``.

``mailer report`` answers what a secretariat is asked: is the list reaching people,
issue after issue; which segments grow or shrink; how many addresses died; did an
issue cause unsubscribes; which receiving domains refuse us. One figure per issue
is computed the way ``mailer status`` computes it (the same ledger reading), so the
two always agree. The page holds counts and domains only: never an address, a
name or a token.

Attribution of what readers did after an issue:
- *unsubscribes* and *complaints* are the rows of ``suppressions.csv`` (one-click,
  mailed and by-hand unsubscribes; ARF complaints) of readers the issue reached,
  written within 14 days after its first message: labelled "within 14 days",
  since the file keeps the day, not the issue;
- *dead mailboxes* are send-time refusals naming the mailbox and hard bounces;
  *policy* the refusals for policy or reputation; *soft* the soft bounces.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from mailer import suppressions
from mailer.ledger import LedgerDir, Outcome, Record
from mailer.replies import Returned, read_reply
from mailer.status import REFUSING_READERS

ATTRIBUTION_DAYS = 14
# A domain with fewer readers than this is grouped as "other" (a domain is personal data
# enough when one or two people hold it).
SMALL_DOMAIN = 5
_UNSUBSCRIBE_REASONS = ("one-click unsubscribe", "unsubscribe request by mail", "unsubscribed")


@dataclass
class IssueFigures:
    """One issue's send, as its ledger holds it (counts only)."""

    issue: str
    first: str | None = None  # the first and last message's time (ISO 8601)
    last: str | None = None
    targeted: int = 0  # addresses the ledger knows
    sent: int = 0
    failed: int = 0  # their last outcome is failed (as mailer status counts)
    dead: int = 0  # failed naming the mailbox, or a hard bounce later
    policy: int = 0  # refused for policy or reputation (send time or later)
    other_failed: int = 0
    soft: int = 0  # soft bounces
    unfinished: int = 0  # deferred, held or never answered (in doubt)
    in_doubt: int = 0
    unsubscribes: int = 0  # within ATTRIBUTION_DAYS after the first message
    complaints: int = 0  # likewise
    pauses: int = 0  # the send stopped at a quota and went on in a later run
    segments: dict[str, int] = field(default_factory=dict)  # readers per segment
    languages: dict[str, int] = field(default_factory=dict)  # readers per language, if recorded
    # Per feedback-loop provider: readers reached there, and their complaints.
    provider_sent: dict[str, int] = field(default_factory=dict)
    provider_complaints: dict[str, int] = field(default_factory=dict)
    # Who unsubscribed and complained (for the totals, which count people once; never
    # in the page or the JSON).
    leavers: set[str] = field(default_factory=set, repr=False)
    complainers: set[str] = field(default_factory=set, repr=False)
    bounces: dict[str, int] = field(default_factory=dict)  # as mailer status --json

    @property
    def delivery_rate(self) -> float:
        return self.sent / self.targeted if self.targeted else 0.0

    @property
    def dead_rate(self) -> float:
        return self.dead / self.targeted if self.targeted else 0.0

    @property
    def unsubscribe_rate(self) -> float:
        return self.unsubscribes / self.sent if self.sent else 0.0


@dataclass
class DomainFigures:
    domain: str  # "other" for the small ones together
    readers: int
    failed: int
    refused: int
    deferred: int
    reply: str  # the most common reply
    refusing: bool  # refuses most of what we send: a blocklisting to raise


@dataclass
class Report:
    issues: list[IssueFigures]  # newest first
    domains: list[DomainFigures]
    suppressions_by_reason: dict[str, dict[str, int]]  # reason -> month -> count
    totals: IssueFigures
    # Per sync source (endpoint, mailbox): when it last succeeded (ISO 8601), if ever.
    last_syncs: dict[str, str | None] = field(default_factory=dict)
    segments: tuple[str, ...] = ()  # --segment: every figure is of these segments' readers
    # Addresses on today's lists (not suppressed) that no issue ever reached, and readers
    # one soft bounce short of MAILER_BOUNCE_SOFT_LIMIT: their counts go to the page and
    # the JSON; the addresses to the command line's --addresses only.
    never_reached_addresses: list[str] = field(default_factory=list, repr=False)
    near_soft_limit_addresses: list[str] = field(default_factory=list, repr=False)

    @property
    def never_reached(self) -> int:
        return len(self.never_reached_addresses)

    @property
    def near_soft_limit(self) -> int:
        return len(self.near_soft_limit_addresses)

    def as_json(self) -> dict[str, Any]:
        return {
            "issues": [_figures_json(f) for f in self.issues],
            "totals": _figures_json(self.totals),
            "domains": [asdict(d) for d in self.domains],
            "suppressions_by_reason": self.suppressions_by_reason,
            "never_reached": self.never_reached,
            "last_syncs": self.last_syncs,
            "near_soft_limit": self.near_soft_limit,
        }


def _figures_json(figures: IssueFigures) -> dict[str, Any]:
    data = asdict(figures)
    del data["leavers"], data["complainers"]
    data["delivery_rate"] = round(figures.delivery_rate, 4)
    data["dead_rate"] = round(figures.dead_rate, 4)
    data["unsubscribe_rate"] = round(figures.unsubscribe_rate, 4)
    return data


@dataclass
class LedgerScan:
    """What one pass over an issue's ledger gathers (per reader: the last outcome);
    the report and ``mailer status`` read the same one."""

    last: dict[str, str] = field(default_factory=dict)
    segments: dict[str, tuple[str, ...]] = field(default_factory=dict)
    languages: dict[str, str] = field(default_factory=dict)
    replies: dict[str, tuple[int | None, str]] = field(default_factory=dict)  # last failure
    first: str | None = None
    final: str | None = None
    pauses: int = 0
    bounces: list[Record] = field(default_factory=list)


_MAILED = {
    str(o) for o in (Outcome.ATTEMPT, Outcome.SENT, Outcome.FAILED, Outcome.DEFERRED, Outcome.HELD)
}


def scan_issue(ledgers: LedgerDir, issue: str, only: frozenset[str] = frozenset()) -> LedgerScan:
    """One streaming pass over the issue's ledger (1.6 million lines take seconds);
    ``only``: the readers of these segments alone (``--segment``)."""
    scan = LedgerScan()
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    for data in ledgers.lines(issue):
        outcome = data.get("outcome")
        if outcome in _MAILED:
            if only and only.isdisjoint(data.get("segments") or ()):
                continue
            recipient = data.get("recipient")
            if not isinstance(recipient, str) or not recipient:
                continue  # not a reader's line (the issue's own send refuses it)
            address = recipient.lower()
            scan.last[address] = outcome
            if segments := data.get("segments"):
                key = tuple(segments)
                scan.segments[address] = shared.setdefault(key, key)
            if isinstance(language := data.get("language"), str):
                scan.languages[address] = language
            if outcome in ("failed", "deferred"):
                scan.replies[address] = (data.get("code"), str(data.get("reply") or ""))
            if outcome == "sent":
                moment = str(data.get("time", ""))
                if scan.first is None or moment < scan.first:
                    scan.first = moment
                if scan.final is None or moment > scan.final:
                    scan.final = moment
        elif outcome == Outcome.PAUSED:
            scan.pauses += 1
        elif outcome == Outcome.BOUNCE:
            try:
                scan.bounces.append(Record.from_dict(data))
            except (KeyError, ValueError, TypeError, AttributeError):
                continue  # a damaged report line: it names nobody we can count
    # Only reports about readers the issue reached (of the chosen segments) count: a
    # report for an address never sent is nobody's failure in this issue.
    scan.bounces = [r for r in scan.bounces if str(r.recipient).lower() in scan.last]
    return scan


def issue_figures(
    ledgers: LedgerDir,
    issue: str,
    removed: list[suppressions.Entry],
    scan: LedgerScan | None = None,
) -> IssueFigures:
    """One issue's figures; ``removed`` are the rows of suppressions.csv."""
    from mailer.bounces import returned  # the bounce reader's one reading of its records
    from mailer.status import returned_counts

    scan = scan or scan_issue(ledgers, issue)
    figures = IssueFigures(issue, first=scan.first, last=scan.final, pauses=scan.pauses)
    for address, outcome in scan.last.items():
        figures.targeted += 1
        figures.sent += outcome == Outcome.SENT
        figures.failed += outcome == Outcome.FAILED
        figures.in_doubt += outcome == Outcome.ATTEMPT
        figures.unfinished += outcome in (Outcome.DEFERRED, Outcome.HELD, Outcome.ATTEMPT)
        for segment in scan.segments.get(address, ()):
            figures.segments[segment] = figures.segments.get(segment, 0) + 1
        if (language := scan.languages.get(address)) is not None:
            figures.languages[language] = figures.languages.get(language, 0) + 1
    failed_now = {a for a, outcome in scan.last.items() if outcome == Outcome.FAILED}
    dead = {a for a in failed_now if read_reply(*scan.replies.get(a, (None, ""))).mailbox_gone}
    policy: set[str] = set()
    for record in scan.bounces:
        kind = returned(record)
        if kind is Returned.HARD:
            dead.add(record.recipient.lower())
        elif kind is Returned.REFUSED:
            policy.add(record.recipient.lower())
    figures.bounces, _ = returned_counts(scan.bounces)
    figures.soft = figures.bounces.get("soft", 0)
    figures.dead = len(dead)
    figures.policy = len(policy - dead)
    figures.other_failed = len(failed_now - dead - policy)
    if scan.first is not None:
        reached = {a for a, outcome in scan.last.items() if outcome == Outcome.SENT}
        figures.leavers, figures.complainers = _who_left(scan.first, reached, removed, issue)
        figures.unsubscribes, figures.complaints = len(figures.leavers), len(figures.complainers)
        figures.provider_sent, figures.provider_complaints = _complaints_by_provider(
            scan.first, reached, removed, issue
        )
    return figures


# Mailbox providers that send a feedback-loop (ARF) report for each complaint, by the
# domains of their users. Gmail sends none per message: its rate is in Postmaster Tools.
FEEDBACK_LOOPS = {
    "Yahoo and AOL": ("yahoo.", "ymail.com", "rocketmail.com", "aol.", "aim.com"),
    "Microsoft (Outlook.com)": ("outlook.", "hotmail.", "live.", "msn.com", "windowslive.com"),
    "Comcast": ("comcast.net",),
}
# Yahoo asks bulk senders to stay under this complaint rate (and Gmail's Postmaster Tools
# shows the same line).
COMPLAINT_LIMIT = 0.003


def provider(domain: str) -> str | None:
    """The feedback-loop provider whose users hold ``domain``, if any."""
    for name, prefixes in FEEDBACK_LOOPS.items():
        if any(domain == p or domain.startswith(p) for p in prefixes):
            return name
    return None


def _complaints_by_provider(
    first: str, reached: set[str], removed: list[suppressions.Entry], issue: str = ""
) -> tuple[dict[str, int], dict[str, int]]:
    """Per feedback-loop provider: readers the issue reached there, and their complaints
    within ATTRIBUTION_DAYS."""
    sent: dict[str, int] = {}
    for address in reached:
        if (name := provider(address.rpartition("@")[2])) is not None:
            sent[name] = sent.get(name, 0) + 1
    complaints: dict[str, int] = {}
    for entry in _within(first, reached, removed, issue):
        name = provider(entry.address.rpartition("@")[2])
        if name is not None and entry.reason.startswith("complaint"):
            complaints[name] = complaints.get(name, 0) + 1
    return sent, complaints


def _within(
    first: str, reached: set[str], removed: list[suppressions.Entry], issue: str = ""
) -> list[suppressions.Entry]:
    """Rows of readers the issue reached: those naming it, and those naming no issue
    written within ATTRIBUTION_DAYS after it."""
    start = datetime.fromisoformat(first).date()
    end = start + timedelta(days=ATTRIBUTION_DAYS)
    found = []
    counted: set[tuple[str, bool]] = set()  # a row repeated (a union merge) counts once
    for entry in removed:
        if entry.address not in reached:
            continue
        kind = (entry.address, entry.reason.startswith("complaint"))
        if kind in counted:
            continue
        if entry.issue is not None:
            if entry.issue == issue:
                found.append(entry)
                counted.add(kind)
            continue
        if entry.day is None:
            continue
        try:
            day = date.fromisoformat(entry.day)
        except ValueError:
            continue
        if start <= day < end:
            found.append(entry)
            counted.add(kind)
    return found


def _who_left(
    first: str, reached: set[str], removed: list[suppressions.Entry], issue: str = ""
) -> tuple[set[str], set[str]]:
    """Who unsubscribed and who complained among the readers the issue reached: the
    requests naming the issue, and the rows naming none written within ATTRIBUTION_DAYS
    after its first message."""
    leavers: set[str] = set()
    complainers: set[str] = set()
    for entry in _within(first, reached, removed, issue):
        if entry.reason.startswith("complaint"):
            complainers.add(entry.address)
        elif entry.reason in _UNSUBSCRIBE_REASONS:
            leavers.add(entry.address)
    return leavers, complainers


def build(
    ledger_dir: Path,
    recipients_dir: Path,
    since: date | None = None,
    sync_state: dict[str, Any] | None = None,
    soft_limit: int = 0,
    segments: frozenset[str] = frozenset(),
) -> Report:
    """The report over every issue whose first message is on or after ``since``;
    ``sync_state`` (sync.load_state) gives the age of each source's last sync."""
    ledgers = LedgerDir(ledger_dir)
    removed = suppressions.entries(recipients_dir)
    issues = []
    domains = _DomainTally()
    reached: set[str] = set()
    streaks: dict[str, int] = {}  # soft bounces in a row, issue after issue (send order)
    for issue in sorted(ledgers.issues(), key=ledgers.started):
        scan = scan_issue(ledgers, issue, segments)
        reached.update(a for a, outcome in scan.last.items() if outcome == Outcome.SENT)
        _soft_streaks(streaks, scan)
        figures = issue_figures(ledgers, issue, removed, scan)
        if figures.first is None and figures.targeted == 0:
            continue
        began = figures.first or ledgers.started(issue)
        if since is not None and (not began or datetime.fromisoformat(began).date() < since):
            continue
        issues.append(figures)
        domains.add(scan)
    issues.sort(key=lambda f: f.first or "", reverse=True)
    suppressed = {entry.address for entry in removed}
    listed = _on_lists(recipients_dir, segments)
    never = listed - reached - suppressed
    near = {
        address
        for address, count in streaks.items()
        if soft_limit >= 2 and count == soft_limit - 1 and address not in suppressed
    }
    return Report(
        issues=issues,
        domains=domains.rows(),
        # --segment: the suppressions of addresses on those segments' lists only.
        suppressions_by_reason=_by_reason_and_month(
            [e for e in removed if e.address in listed] if segments else removed, since
        ),
        totals=_totals(issues),
        never_reached_addresses=sorted(never),
        near_soft_limit_addresses=sorted(near),
        segments=tuple(sorted(segments)),
        last_syncs={
            source: (sync_state or {}).get(source, {}).get("last_success")
            for source in ("endpoint", "mailbox")
            if source in (sync_state or {})
        },
    )


def _soft_streaks(streaks: dict[str, int], scan: LedgerScan) -> None:
    """One issue more of each mailed reader's soft-bounce streak: a soft bounce adds one,
    any other outcome starts it again (as bounces.soft_failures counts for suppression)."""
    from mailer.bounces import returned

    soft = {r.recipient.lower() for r in scan.bounces if returned(r) is Returned.SOFT}
    for address in scan.last:
        streaks[address] = streaks.get(address, 0) + 1 if address in soft else 0


def _on_lists(directory: Path, segments: frozenset[str]) -> set[str]:
    """Addresses of today's lists (of ``segments``, when given)."""
    from mailer.recipients import available_segments
    from mailer.spreadsheet import read_sheet

    on_lists: set[str] = set()
    for segment in available_segments(directory):
        if segments and segment not in segments:
            continue
        for _, row in read_sheet(directory / f"{segment}.csv").rows():
            try:
                on_lists.add(suppressions.normalize_address(row.get("email", "")).lower())
            except ValueError:
                continue  # loading the list reports it
    return on_lists


def _totals(issues: list[IssueFigures]) -> IssueFigures:
    total = IssueFigures("all issues")
    for figures in issues:
        for name in (
            "targeted",
            "sent",
            "failed",
            "dead",
            "policy",
            "other_failed",
            "soft",
            "unfinished",
            "in_doubt",
            "pauses",
        ):
            setattr(total, name, getattr(total, name) + getattr(figures, name))
    # A reader who left after two issues close together left once: people count once.
    total.unsubscribes = len(set().union(*(f.leavers for f in issues)))
    total.complaints = len(set().union(*(f.complainers for f in issues)))
    return total


def _reply_code(code: int | None, text: str) -> str:
    """What a page may say of a server's reply: its code and enhanced code only
    ("550 5.1.1"). The text often quotes the address, even the person's name."""
    from mailer.replies import enhanced_code

    enhanced = enhanced_code(text)
    parts = [str(code) if code else "", ".".join(str(n) for n in enhanced) if enhanced else ""]
    return " ".join(p for p in parts if p) or "(no code)"


class _DomainTally:
    """Receiving domains by failures and deferrals over the issues, each reader counted
    once, small domains grouped."""

    def __init__(self) -> None:
        self.readers: dict[str, set[str]] = {}
        self.failed: dict[str, set[str]] = {}
        self.refused: dict[str, set[str]] = {}
        self.deferred: dict[str, set[str]] = {}
        self.replies: dict[str, Counter[str]] = {}

    def add(self, scan: LedgerScan) -> None:
        from mailer.bounces import returned

        for address, outcome in scan.last.items():
            domain = address.rpartition("@")[2]
            self.readers.setdefault(domain, set()).add(address)
            if outcome == Outcome.FAILED:
                self.failed.setdefault(domain, set()).add(address)
            elif outcome == Outcome.DEFERRED:
                self.deferred.setdefault(domain, set()).add(address)
            else:
                continue
            code, reply = scan.replies.get(address, (None, ""))
            self.replies.setdefault(domain, Counter())[_reply_code(code, reply)] += 1
        for record in scan.bounces:
            if returned(record) is Returned.REFUSED:
                address = record.recipient.lower()
                domain = address.rpartition("@")[2]
                self.refused.setdefault(domain, set()).add(address)
                self.replies.setdefault(domain, Counter())[
                    _reply_code(None, record.reply or "")
                ] += 1

    def rows(self) -> list[DomainFigures]:
        rows: dict[str, DomainFigures] = {}
        for domain, readers in self.readers.items():
            failed = len(self.failed.get(domain, ()))
            refused = len(self.refused.get(domain, ()))
            deferred = len(self.deferred.get(domain, ()))
            if not (failed or refused or deferred):
                continue
            name = domain if len(readers) >= SMALL_DOMAIN else "other"
            row = rows.setdefault(name, DomainFigures(name, 0, 0, 0, 0, "", False))
            row.readers += len(readers)
            row.failed += failed
            row.refused += refused
            row.deferred += deferred
            if name != "other" and self.replies.get(domain):
                row.reply = self.replies[domain].most_common(1)[0][0]
        for row in rows.values():
            row.refusing = (
                row.domain != "other"
                and row.refused >= REFUSING_READERS
                and row.refused * 2 > row.readers
            )
        return sorted(rows.values(), key=lambda r: (-(r.failed + r.refused + r.deferred), r.domain))


# Suppression reasons in a fixed set of categories: the file's reason is free text
# (mailer unsubscribe --reason "phoned by …"), and the page holds no words of a person.
_CATEGORIES = (
    ("one-click unsubscribe", "unsubscribed (one click)"),
    ("unsubscribe request by mail", "unsubscribed (by mail)"),
    ("complaint", "complaint"),
    ("bounced", "dead mailbox (bounced)"),
    ("rejected: no such mailbox", "dead mailbox (refused at sending)"),
    ("soft-bounces", "soft bounces in a row"),
    ("unsubscribed", "unsubscribed (mailer unsubscribe, or before reasons were kept)"),
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _category(reason: str) -> str:
    for prefix, category in _CATEGORIES:
        if reason.startswith(prefix):
            return category
    return "other (by staff)"


def _by_reason_and_month(
    removed: list[suppressions.Entry], since: date | None
) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for entry in removed:
        day = entry.day if entry.day and _DAY.match(entry.day) else None
        if since is not None and (day is None or day < since.isoformat()):
            continue
        by_month = found.setdefault(_category(entry.reason), {})
        month = day[:7] if day else "undated"
        by_month[month] = by_month.get(month, 0) + 1
    return found


def render(report: Report, organization: str, templates: Path | None, today: date) -> str:
    """The self-contained page: tables, and each chart with its figures beneath."""
    from mailer import charts, templating

    env = templating.environment(templates, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    templating.use_language(env, templating.translations(templates, "en"), "en")
    oldest_first = list(reversed(report.issues))
    labels = [f.issue for f in oldest_first]
    from markupsafe import Markup

    rendered: list[dict[str, Any]] = []
    for title, series, percent, note, limit in _chart_specs(oldest_first):
        drawn = charts.line_chart(
            title,
            labels,
            series,
            percent=percent,
            limit=limit,
            limit_label=f"{limit:.1%}" if limit else "",
        )
        rendered.append(
            {
                "title": title,
                "note": note,
                "svg": {scheme: Markup(svg) for scheme, svg in drawn.items()},
                "series": list(series),
                "rows": [
                    [label, *(_shown(values[i], percent) for values in series.values())]
                    for i, label in enumerate(labels)
                ],
            }
        )
    months = sorted({m for by_month in report.suppressions_by_reason.values() for m in by_month})
    first = report.issues[-1].first if report.issues else None
    period = f"{len(report.issues)} issue(s)" + (f" since {first[:10]}" if first else "")
    if report.segments:
        period += f", readers of {', '.join(report.segments)} only"
    return env.get_template("report/health.html.j2").render(
        lang="en",
        organization=organization,
        bulletin_name="List health",
        home_href=None,
        alternates=[],
        logo_url=None,
        issues=report.issues,
        totals=report.totals,
        durations={f.issue: _duration(f) for f in report.issues},
        days=ATTRIBUTION_DAYS,
        charts=rendered,
        domains=report.domains,
        small=SMALL_DOMAIN,
        hygiene=report.suppressions_by_reason,
        hygiene_months=months,
        advice=advice(report),
        no_feedback_loop=not any(f.provider_sent for f in report.issues),
        never_reached=report.never_reached,
        near_soft_limit=report.near_soft_limit,
        last_syncs=report.last_syncs,
        period=period,
        made=today.isoformat(),
    )


def _chart_specs(
    issues: list[IssueFigures],
) -> list[tuple[str, dict[str, list[float]], bool, str, float | None]]:
    segments = sorted({s for f in issues for s in f.segments})
    languages = sorted({lang for f in issues for lang in f.languages})
    by_language = [
        (
            "Readers per language, issue by issue",
            {lang: [float(f.languages.get(lang, 0)) for f in issues] for lang in languages},
            False,
            "Counted from the issues whose ledger records each reader's language.",
            None,
        )
    ]
    return [
        (
            "Readers per segment, issue by issue",
            {s: [float(f.segments.get(s, 0)) for f in issues] for s in segments},
            False,
            "",
            None,
        ),
        (
            "Delivered, of the readers each issue was sent to",
            {"delivered": [f.delivery_rate for f in issues]},
            True,
            "",
            None,
        ),
        (
            "Dead mailboxes and unsubscribes, issue by issue",
            {
                "dead mailboxes (of readers)": [f.dead_rate for f in issues],
                "unsubscribes (of delivered)": [f.unsubscribe_rate for f in issues],
            },
            True,
            "",
            None,
        ),
        *(by_language if languages else []),
        *_complaint_chart(issues),
    ]


def _complaint_chart(
    issues: list[IssueFigures],
) -> list[tuple[str, dict[str, list[float]], bool, str, float | None]]:
    """Complaint rate per feedback-loop provider (its reports ÷ our mail to its users)."""
    names = sorted({name for f in issues for name in f.provider_sent})
    if not names:
        return []  # the page says so (no_feedback_loop)
    rates = {
        name: [
            f.provider_complaints.get(name, 0) / f.provider_sent[name]
            if f.provider_sent.get(name)
            else 0.0
            for f in issues
        ]
        for name in names
    }
    return [
        (
            "Complaint rate per mailbox provider (its reports, of our mail to its users)",
            rates,
            True,
            f"The dashed line is {COMPLAINT_LIMIT:.1%}, the rate Yahoo asks bulk senders to "
            "stay under. Gmail sends no report per complaint: its rate is in Google "
            "Postmaster Tools.",
            COMPLAINT_LIMIT,
        )
    ]


def _shown(value: float, percent: bool) -> str:
    return f"{value * 100:.1f}%" if percent else f"{value:.0f}"


def _duration(figures: IssueFigures) -> str:
    """From the first message to the last, as staff say it."""
    if not figures.first or not figures.last:
        return ""
    seconds = (
        datetime.fromisoformat(figures.last) - datetime.fromisoformat(figures.first)
    ).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


SUMMARY_ISSUES = 20  # a job summary holds the touched issues, far under GitHub's 1 MiB


def touched_by(ledger_dir: Path, run: str) -> set[str]:
    """The issues whose ledger holds a record of scheduled run ``run``."""
    ledgers = LedgerDir(ledger_dir)
    return {
        issue
        for issue in ledgers.issues()
        if any(r.run == run for r in ledgers.records(issue, skip_damaged=True))
    }


def markdown(report: Report, only: set[str] | None = None) -> str:
    """The key figures as a Markdown table: the workflow's job summary."""
    rows = [f for f in report.issues if only is None or f.issue in only][:SUMMARY_ISSUES]
    lines = [
        "| issue | sent | failed | unfinished | unsubscribes* | complaints* |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in rows:
        counts = (f.sent, f.failed, f.unfinished, f.unsubscribes, f.complaints)
        lines.append(f"| {f.issue} | " + " | ".join(str(n) for n in counts) + " |")
    if not rows:
        lines.append("| (none) | | | | | |")
    lines.append("")
    lines.append(f"\\* within {ATTRIBUTION_DAYS} days after the issue's first message.")
    return "\n".join(lines) + "\n"


def advice(report: Report) -> list[str]:
    """What the figures ask staff to do, in plain words (the page's first section)."""
    found = [
        f"{d.domain} refuses most of what we send ({d.refused} of {d.readers} readers): a "
        "blocklisting or a policy to raise with that organization's mail administrators."
        for d in report.domains
        if d.refusing
    ]
    for figures in report.issues[:1]:  # the latest issue
        if figures.dead_rate > 0.02:
            found.append(
                f"{figures.dead_rate:.1%} of the readers of {figures.issue} were dead mailboxes "
                "(over 2%): ask the focal points to confirm their contacts."
            )
        for name, sent in figures.provider_sent.items():
            rate = figures.provider_complaints.get(name, 0) / sent if sent else 0.0
            if rate > COMPLAINT_LIMIT:
                found.append(
                    f"{name}'s users complained about {figures.issue} at {rate:.1%} (over "
                    f"{COMPLAINT_LIMIT:.1%}): check that every reader asked to receive it."
                )
    if report.near_soft_limit:
        found.append(
            f"{report.near_soft_limit} reader(s) are one soft bounce from being suppressed: "
            "mailer report --addresses lists them, to check with their organizations."
        )
    if report.never_reached:
        found.append(
            f"{report.never_reached} address(es) on the lists were never delivered an issue: "
            "new readers, or addresses to check (mailer report --addresses)."
        )
    found.append(
        "Settings a mailbox provider checks (DKIM, DMARC, the unsubscribe headers) are not "
        "in this page: mailer check BULLETIN lists what is missing."
    )
    return found
