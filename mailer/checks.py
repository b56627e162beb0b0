"""``mailer check``: everything a send would need, checked without writing anything.

Loading already validates content and recipients (errors name file, line and
field); this renders every variant the list needs and looks at it the way inbox
providers and spam filters do, and says which settings a real send would miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailer.compose import Variant, VariantKey
from mailer.errors import ContentError
from mailer.message import HOLE_PATTERN
from mailer.pipeline import Job
from mailer.recipients import Recipient
from mailer.settings import Settings

GMAIL_CLIP_BYTES = 102 * 1024
RELAY_SIZE_WARNING = 10_000_000


@dataclass
class CheckReport:
    """What ``mailer check`` found: the variants it rendered, and warnings."""

    variants: dict[VariantKey, int] = field(default_factory=dict)
    sizes: dict[VariantKey, int] = field(default_factory=dict)  # HTML part, bytes
    message_sizes: dict[VariantKey, int] = field(default_factory=dict)  # whole message
    warnings: list[str] = field(default_factory=list)


_HREF = re.compile(r"""href=["']([^"']*)["']""")
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ALT = re.compile(r"""\balt=["']([^"']+)["']""")
SUBJECT_LIMIT = 78  # longer subjects are cut in most inbox lists


def _deliverability(variant: Variant, key: VariantKey) -> list[str]:
    """What inbox providers and spam filters would hold against a variant."""
    label = key.label()
    found = []
    for href in dict.fromkeys(_HREF.findall(variant.html)):
        if HOLE_PATTERN.fullmatch(href):
            continue  # a personal link (unsubscribe), filled in per reader
        if href.startswith("http://"):
            found.append(f"{label}: the link {href} is not https; prefer https://.")
        elif not href.startswith(("https://", "mailto:")):
            raise ContentError(
                f"the link '{href}' in variant {label} is not absolute; it would be dead in "
                "every inbox.",
                field="href",
            )
    for tag in _IMG.findall(variant.html):
        if not _ALT.search(tag):
            raise ContentError(f"an image of variant {label} has no alt text: {tag}", field="alt")
    if len(variant.subject) > SUBJECT_LIMIT:
        found.append(
            f"the subject in '{key.language}' has {len(variant.subject)} characters; inboxes "
            f"show about {SUBJECT_LIMIT} or fewer."
        )
    words = len(HOLE_PATTERN.sub("", variant.text).split())
    if words < 50:
        found.append(f"{label}: the plain text has only {words} words; add some text.")
    return found


def check(job: Job, settings: Settings) -> CheckReport:
    """Render every variant the list needs and check what a real send would need."""
    report = CheckReport()
    first: dict[VariantKey, Recipient] = {}
    for recipient in job.recipients:
        key = VariantKey(recipient.segments, recipient.language)
        report.variants[key] = report.variants.get(key, 0) + 1
        first.setdefault(key, recipient)
    for key in report.variants:
        # The whole message as its first reader gets it: what a relay's SIZE limit judges.
        size = len(job.composer.compose(first[key]).data)
        report.message_sizes[key] = size
        if size > RELAY_SIZE_WARNING:
            report.warnings.append(
                f"{key.label()}: the message is {size / 1e6:.1f} MB; many relays refuse more "
                "than 10 MB (Amazon SES) or 25 MB (Microsoft 365, Gmail). Make the images "
                "smaller or host them under MAILER_ARCHIVE_URL."
            )
        variant = job.composer.variant(key)
        size = len(variant.html.encode("utf-8"))
        report.sizes[key] = size
        if size > GMAIL_CLIP_BYTES:
            raise ContentError(
                f"the HTML of variant {key.label()} is {size // 1024} KB; Gmail clips messages "
                f"over 102 KB. Shorten the items or move images to MAILER_ARCHIVE_URL.",
                file=job.bulletin.path,
            )
        report.warnings.extend(_deliverability(variant, key))
    report.warnings = list(dict.fromkeys(report.warnings))  # one per language, not per variant
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
