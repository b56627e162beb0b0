"""Where an issue's send stands: the ledger is the truth.

One rule decides "complete" for ``send``'s exit code and ``dispatch`` alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailer import suppressions
from mailer.issue import Issue
from mailer.ledger import OUTCOMES, LedgerDir, Outcome, Record
from mailer.settings import Settings

if TYPE_CHECKING:  # delivery imports aiosmtplib; status stays light
    from mailer.recorder import Report


@dataclass
class Status:
    """Per segment and in all: sent, failed, deferred, pending. The ledger is the truth.

    Every address the issue's ledger knows counts under its last outcome, whether
    or not it is still in a CSV or has been suppressed since (per the segments it
    was sent for); every current recipient not done counts as pending (in doubt
    ones too: they are sent again). An address no longer on the list whose send
    never ended (deferred or in doubt) counts as deferred: it will not be retried.
    """

    segments: dict[str, dict[str, int]]
    total: dict[str, int]
    failures: list[Record]
    in_doubt: int
    suppressed_since: frozenset[str] = frozenset()  # failed addresses suppressed later
    # Current recipients still to send (pending or deferred): what "complete" means.
    unfinished: int = 0
    # Readers with a returned report, by class (hard, soft, refused; each reader once,
    # by their most serious report), and domains refusing several readers for policy.
    bounces: dict[str, int] = field(default_factory=dict)
    refusing: list[tuple[str, int, str]] = field(default_factory=list)
    # Readers this issue reached who are in suppressions.csv now (unsubscribed or
    # bounced since): counted as sent, and never mailed again.
    sent_then_suppressed: int = 0
    # Unsubscribes and complaints of readers it reached, within 14 days after its first
    # message (report.py: the figures mailer report shows for the issue).
    unsubscribes: int = 0
    complaints: int = 0

    @property
    def complete(self) -> bool:
        """No current recipient is pending or deferred (failures are final, not unfinished).

        The one rule behind ``send``'s exit code and ``dispatch``'s "complete".
        """
        return self.unfinished == 0

    def as_json(self) -> dict[str, object]:
        return {
            "segments": self.segments,
            "total": self.total,
            "bounces": self.bounces,
            "refusing_domains": [
                {"domain": d, "readers": n, "reply": reply} for d, n, reply in self.refusing
            ],
            "unsubscribes": self.unsubscribes,
            "complaints": self.complaints,
        }


_COLUMNS = ("sent", "failed", "deferred", "pending")


def status(job: Issue, settings: Settings) -> Status:
    """Where the issue's send stands, from its ledger and the current recipients."""
    ledgers = LedgerDir(settings.ledger_dir)
    state = ledgers.state(job.bulletin.id, with_segments=True)
    segments = {s: dict.fromkeys(_COLUMNS, 0) for s in job.recipients.segments}
    total = dict.fromkeys(_COLUMNS, 0)
    in_doubt = unfinished = 0

    def count(column: str, where: tuple[str, ...]) -> None:
        total[column] += 1
        for segment in where:
            segments.setdefault(segment, dict.fromkeys(_COLUMNS, 0))[column] += 1

    current: set[str] = set()
    for key, where in job.recipients.memberships():
        current.add(key)
        last = state.outcome(key)
        column = last if last in OUTCOMES else "pending"
        in_doubt += last == Outcome.ATTEMPT
        unfinished += column in ("pending", "deferred")
        count(column, where)
    for key, (last, _) in state.last.items():
        if key in current or last == Outcome.HELD:
            continue  # counted above; or held and since removed: nothing happened to it
        column = last if last in OUTCOMES else Outcome.DEFERRED
        count(column, state.segments.get(key, ()))
    failures = sorted(state.unfinished.values(), key=lambda r: r.recipient)
    suppressed = suppressions.load(job.recipients.directory)
    since = frozenset(r.recipient for r in failures if r.recipient.lower() in suppressed)
    reached = sum(1 for key in suppressed if state.last.get(key, ("", 0))[0] == Outcome.SENT)
    from mailer.report import issue_figures, scan_issue  # report reads status's rules

    # One pass for what the report counts too: reports about readers this issue reached
    # (a report naming an address never sent is nobody's failure here), and who left.
    scan = scan_issue(ledgers, job.bulletin.id)
    returned, refusing = returned_counts(scan.bounces)
    figures = issue_figures(
        ledgers, job.bulletin.id, suppressions.entries(job.recipients.directory), scan
    )
    return Status(
        segments,
        total,
        failures,
        in_doubt,
        since,
        unfinished,
        returned,
        refusing,
        reached,
        figures.unsubscribes,
        figures.complaints,
    )


# This many readers of one issue at one domain refused for policy or reputation is the
# domain refusing us (a blocklisting to raise with that organization), not dead mailboxes.
REFUSING_READERS = 3
_SERIOUS = ("hard", "soft", "refused")


def returned_counts(
    records: Iterable[Record],
) -> tuple[dict[str, int], list[tuple[str, int, str]]]:
    """Readers by the class of their returned reports, and the domains refusing several."""
    from mailer.bounces import returned  # the bounce reader's one reading of its records

    worst: dict[str, str] = {}
    refused: dict[str, dict[str, str]] = {}
    for record in records:
        if record.outcome != Outcome.BOUNCE:
            continue
        kind = str(returned(record))
        address = record.recipient.lower()
        if kind not in _SERIOUS:
            continue
        if address not in worst or _SERIOUS.index(kind) < _SERIOUS.index(worst[address]):
            worst[address] = kind
        if kind == "refused":
            domain = address.rpartition("@")[2]
            refused.setdefault(domain, {})[address] = (record.reply or "")[:160]
    counts = dict.fromkeys(_SERIOUS, 0)
    for kind in worst.values():
        counts[kind] += 1
    refusing = sorted(
        (
            (domain, len(readers), next(iter(readers.values())))
            for domain, readers in refused.items()
            if len(readers) >= REFUSING_READERS
        ),
        key=lambda row: (-row[1], row[0]),
    )
    return counts, refusing


# A run that stopped at the relay's quota, with nothing else wrong: the rest
# waits for the next run (sysexits' EX_TEMPFAIL). Not an error for the workflow.
PAUSED_AT_QUOTA = 75


def exit_code(issue: Issue, settings: Settings, report: Report | None = None) -> int:
    """The exit code of a run that sent ``issue`` (``report``) or found nothing to send.

    1 when the run met a failure, a deferral or a stop (reported once, by the run
    that met it), or when the issue is not complete; 75 when it only stopped at
    the relay's quota; else 0. In-doubt recipients resent and now sent are
    reported, not an error.
    """
    if report is not None:
        quiet = not (report.total.failed or report.total.deferred)
        if report.paused_until is not None and quiet:
            return PAUSED_AT_QUOTA
        if report.met_trouble:
            return 1
    return 0 if status(issue, settings).complete else 1
