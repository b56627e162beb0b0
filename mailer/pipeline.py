"""The jobs the commands run, wiring the stages: load → compose → sink.

Kept apart from ``cli.py`` so the command line only parses arguments and prints,
and tests can drive a whole job without a terminal.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailer.bulletin import Bulletin, load_bulletin
from mailer.compose import Composer, Identity, OutgoingMessage, VariantKey
from mailer.errors import ContentError
from mailer.preview import PreviewResult, write_preview
from mailer.recipients import RecipientList, available_segments, load_recipients
from mailer.settings import Settings

GMAIL_CLIP_BYTES = 102 * 1024


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
class CheckReport:
    """What ``mailer check`` found: the variants it rendered, and warnings."""

    variants: dict[VariantKey, int] = field(default_factory=dict)
    sizes: dict[VariantKey, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def check(job: Job, settings: Settings) -> CheckReport:
    """Render every variant the list needs and check what a real send would need."""
    report = CheckReport()
    for recipient in job.recipients:
        key = VariantKey(recipient.segments, recipient.language)
        report.variants[key] = report.variants.get(key, 0) + 1
    for key in report.variants:
        variant = job.composer.variant(key)
        size = len(variant.html.encode("utf-8"))
        report.sizes[key] = size
        if size > GMAIL_CLIP_BYTES:
            raise ContentError(
                f"the HTML of variant {key.label()} is {size // 1024} KB; Gmail clips messages "
                f"over 102 KB. Shorten the items or move images to MAILER_ARCHIVE_URL.",
                file=job.bulletin.path,
            )
    report.warnings.extend(p.describe() for p in job.recipients.warnings)
    report.warnings.extend(f"skipped: {p.describe()}" for p in job.recipients.skipped)
    if settings.from_ is None:
        report.warnings.append("MAILER_FROM is not set: a real send will refuse to start.")
    if settings.unsubscribe_mailto is None and settings.unsubscribe_url is None:
        report.warnings.append(
            "neither MAILER_UNSUBSCRIBE_MAILTO nor MAILER_UNSUBSCRIBE_URL is set: "
            "a real send will refuse to start."
        )
    return report
