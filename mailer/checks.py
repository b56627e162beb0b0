"""``mailer check``: everything a send would need, checked without writing anything.

Loading already validates content and recipients (errors name file, line and
field); this renders every variant the list needs and looks at it the way inbox
providers and spam filters do, and says which settings a real send would miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailer import templating
from mailer.compose import Variant, VariantKey
from mailer.errors import ConfigError, ContentError
from mailer.message import HOLE_PATTERN
from mailer.pipeline import Job
from mailer.recipients import Recipient
from mailer.settings import Settings
from mailer.verp import id_key

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
    """What inbox providers and spam filters would hold against a variant (each said
    without the variant: ``check`` groups the variants one finding concerns)."""
    label = key.label()
    found = []
    for href in dict.fromkeys(_HREF.findall(variant.html)):
        if HOLE_PATTERN.fullmatch(href):
            continue  # a personal link (unsubscribe), filled in per reader
        if href.startswith("http://"):
            found.append(f"the link {href} is not https; prefer https://.")
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
        found.append(f"the plain text has only {words} words; add some text.")
    return found


def _translations(job: Job) -> list[str]:
    """Stale translations (a real send refuses them), each with the English change when
    git has the old text; unstamped ones in one line (they block nothing)."""
    from mailer import translations

    found = []
    every = translations.of(job.bulletin)
    for stale in (t for t in every if t.state is translations.State.STALE):
        change = translations.english_change(stale)
        found.append(
            f"{stale.name}: the English item changed after this translation was made; a real "
            f"send refuses until it is reviewed and stamped (mailer translations "
            f"{job.bulletin.path} --stamp {stale.name})."
            + (
                f" English change: {change}"
                if change
                else " (git has no earlier text of the English item to show the change: "
                "commit the English item when you stamp, and the next change shows here)"
            )
        )
    unstamped = [t.name for t in every if t.state is translations.State.UNSTAMPED]
    if unstamped:
        found.append(
            f"{len(unstamped)} translation(s) say nothing of the English they translate "
            f"({', '.join(unstamped)}): once reviewed, stamp them (mailer translations "
            f"{job.bulletin.path} --stamp NAME), so a later English change is noticed."
        )
    return found


def _grouped(concerns: dict[str, list[str]], variants: int) -> list[str]:
    """One line a finding, naming the variants it concerns (two http links in 9
    variants were 18 lines)."""
    lines = []
    for finding, labels in concerns.items():
        if len(labels) == variants and variants > 1:
            where = "every variant"
        elif len(labels) > 3:
            where = f"{len(labels)} variants: {', '.join(labels[:3])}, …"
        else:
            where = ", ".join(labels)
        lines.append(f"{finding} ({where})")
    return lines


def check(job: Job, settings: Settings) -> CheckReport:
    """Render every variant the list needs and check what a real send would need."""
    report = CheckReport()
    first: dict[VariantKey, Recipient] = {}
    concerns: dict[str, list[str]] = {}  # a finding: the variants it concerns
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
        for finding in _deliverability(variant, key):
            concerns.setdefault(finding, []).append(key.label())
    report.warnings.extend(_grouped(concerns, len(report.variants)))
    report.warnings.extend(_translations(job))
    drafts = [item.slug for item in job.bulletin.items if item.draft]
    if drafts:
        report.warnings.append(
            f"{len(drafts)} item(s) are drafts ({', '.join(drafts)}): a real send refuses "
            "until each is edited and its 'draft: true' line deleted (or the file deleted)."
        )
    report.warnings.extend(p.describe() for p in job.recipients.warnings)
    report.warnings.extend(f"skipped: {p.describe()}" for p in job.recipients.skipped)
    if settings.from_ is None:
        report.warnings.append("MAILER_FROM is not set: a real send will refuse to start.")
    if settings.provider == "microsoft365" and settings.bounce_address:
        report.warnings.append(
            "MAILER_BOUNCE_ADDRESS is set, but Microsoft 365 requires the envelope sender to be "
            "the sending mailbox: leave it unset (README, 'Microsoft 365')."
        )
    if settings.unsubscribe_mailto is None and settings.unsubscribe_url is None:
        report.warnings.append(
            "neither MAILER_UNSUBSCRIBE_MAILTO nor MAILER_UNSUBSCRIBE_URL is set: "
            "a real send will refuse to start."
        )
    report.warnings.extend(_deadlines(job))
    for name in templating.unknown_overrides(settings.templates_dir):
        report.warnings.append(
            f"templates: {name} has no bundled counterpart, so it is never used (a typo in "
            "its name or folder?)."
        )
    if settings.unsubscribe_mailto and id_key(settings) is None:
        report.warnings.append(
            "MAILER_UNSUBSCRIBE_MAILTO without MAILER_BOUNCE_SECRET or MAILER_UNSUBSCRIBE_SECRET: "
            "the mailto is the bare address, not each reader's own, so mailed requests are "
            "trusted only through MAILER_IMAP_AUTHSERV_ID."
        )
    if settings.from_ is not None:  # settings a real send would use
        report.warnings.extend(providers_rules(job, settings))
    return report


# Gmail's and Yahoo's definition of a bulk sender: 5,000 or more messages a day to them.
BULK_PER_DAY = 5000
_BIG_MAILBOXES = re.compile(
    r"@(gmail\.com|googlemail\.com|yahoo\.[a-z.]+|ymail\.com|rocketmail\.com|aol\.com)$",
    re.IGNORECASE,
)


def providers_rules(job: Job, settings: Settings) -> list[str]:
    """What Gmail, Yahoo and DMARC require of a send with these settings: a refusal
    (ConfigError, exit 2) for what they would reject, warnings for the rest."""
    warnings = []
    at_big = sum(1 for address, _ in job.recipients.memberships() if _BIG_MAILBOXES.search(address))
    one_click = bool(settings.unsubscribe_url and settings.unsubscribe_secret)
    if at_big and not one_click:
        text = (
            f"{at_big:,} addresses of the lists are at Gmail or Yahoo, and without "
            "MAILER_UNSUBSCRIBE_URL (with MAILER_UNSUBSCRIBE_SECRET) the messages offer no "
            "one-click unsubscribe (RFC 8058), which both require of bulk senders"
        )
        if at_big >= BULK_PER_DAY:
            raise ConfigError(
                f"{text} ({BULK_PER_DAY:,} a day or more).", field="MAILER_UNSUBSCRIBE_URL"
            )
        warnings.append(f"{text} from {BULK_PER_DAY:,} a day; set it before the list grows.")
    _require_alignment(settings)
    if settings.dkim_domain is None:
        warnings.append(
            "messages are not DKIM-signed (MAILER_DKIM_DOMAIN, _SELECTOR, _KEY_FILE): Gmail "
            "and Yahoo expect bulk mail to be signed, aligned with the From domain."
        )
    if settings.smtp_security == "none" and settings.sign_in != "none":
        host = settings.smtp_host.lower()
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(
                f"MAILER_SMTP_SECURITY=none would send the sign-in ({settings.sign_in}) to "
                f"{settings.smtp_host} in clear text; use starttls or tls.",
                field="MAILER_SMTP_SECURITY",
            )
    return warnings


def _require_alignment(settings: Settings) -> None:
    """DMARC passes only when the DKIM signing domain or the Return-Path domain shares
    the From domain's organizational domain (relaxed alignment, RFC 7489 §3.1)."""
    from email.utils import parseaddr

    from publicsuffixlist import PublicSuffixList  # the Public Suffix List, bundled offline

    suffixes = PublicSuffixList()

    def organization(domain: str) -> str:
        domain = domain.lower().rstrip(".")
        return str(suffixes.privatesuffix(domain) or domain)

    sender = organization(parseaddr(settings.from_ or "")[1].rpartition("@")[2])
    envelope = (settings.bounce_address or settings.from_ or "").rpartition("@")[2]
    envelope = parseaddr(envelope)[1] or envelope.rstrip(">")
    candidates = [envelope]
    if settings.dkim_domain:
        candidates.append(settings.dkim_domain)
    if not any(organization(domain) == sender for domain in candidates if domain):
        raise ConfigError(
            f"DMARC would fail: neither the DKIM domain ({settings.dkim_domain or 'none'}) nor "
            f"the Return-Path domain ({envelope}) belongs to the From domain's organization "
            f"({sender}). Sign with d={sender} (or a subdomain), or use a bounce address there.",
            field="MAILER_DKIM_DOMAIN",
        )


def _deadlines(job: Job) -> list[str]:
    """Deadlines already past when the issue is dated or sent: a typo, most likely."""
    bulletin = job.bulletin
    found = []
    for item in bulletin.items:
        if item.deadline is None:
            continue
        sent = bulletin.send_at.date() if bulletin.send_at else None
        if item.deadline < bulletin.date or (sent is not None and item.deadline < sent):
            when = "the issue's date" if item.deadline < bulletin.date else "send_at"
            found.append(
                f"{item.source.name}: the deadline {item.deadline.isoformat()} falls before "
                f"{when}; readers would get a deadline already past."
            )
    return found


_SECRETS = (
    ("MAILER_SMTP_PASSWORD", "smtp_password"),
    ("MAILER_OAUTH_CLIENT_SECRET", "oauth_client_secret"),
    ("MAILER_UNSUBSCRIBE_SECRET", "unsubscribe_secret"),
    ("MAILER_BOUNCE_SECRET", "bounce_secret"),
)


def relay_summary(settings: Settings, messages: int) -> list[str]:
    """The effective relay settings (presets applied, secrets masked) and the time a
    send of ``messages`` takes under the limits, for ``mailer check``."""
    s = settings
    who = f" as {s.smtp_username}" if s.smtp_username and s.sign_in != "none" else ""
    limits = ", ".join(limit.label for limit in s.limits) or "none"
    rate = f"; at most {s.rate_per_second:g}/second" if s.rate_per_second else ""
    preset = f" (preset {s.provider}; explicit settings win)" if s.provider else ""
    lines = [
        f"relay: {s.smtp_host}:{s.smtp_port} ({s.smtp_security}), sign-in {s.sign_in}{who}, "
        f"{s.max_connections} connections, limits: {limits}{rate}{preset}",
    ]
    if s.sign_in == "xoauth2":
        lines.append(f"OAuth2: token from {s.oauth_token_url or '(unset)'}, scope {s.oauth_scope}")
    secrets = [name for name, field in _SECRETS if getattr(s, field) is not None]
    if secrets:
        lines.append(f"secrets set (values hidden): {', '.join(secrets)}")
    seconds = send_duration(settings, messages)
    if seconds >= 60:
        lines.append(
            f"at these limits, {messages:,} messages take at least {_duration(seconds)}"
            + (" over several runs (the scheduled workflow resumes)" if seconds > 86400 else "")
            + "; mail the mailbox sends otherwise also counts against the relay's quota."
        )
    return lines


def send_duration(settings: Settings, messages: int) -> float:
    """The shortest time ``messages`` can take under every limit (quota windows, rate)."""
    if messages <= 0:
        return 0.0
    seconds = messages / settings.rate_per_second if settings.rate_per_second else 0.0
    for limit in settings.limits:
        seconds = max(seconds, ((messages - 1) // limit.count) * limit.seconds)
    return seconds


def _duration(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min"]
    return " ".join(part for part in parts if part and not (days and part.endswith("min")))
