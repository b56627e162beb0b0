"""Is the web archive live? Every archive URL an issue's messages hold, fetched.

With ``MAILER_ARCHIVE_URL`` set, messages link the issue's page, load images
from the archive and link calendar files. A real send first fetches each of
those URLs (GET, as a mail client would), retrying for ``MAILER_ARCHIVE_WAIT``
seconds since a deploy takes a minute to appear, and refuses (exit 2) while any
is missing: a send never goes out with dead links. ``mailer check`` and
``--test-to`` only warn, since before ``send_at`` the pages are not published.
The URLs are read from the rendered variants themselves, so the check sees
exactly what readers will get.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime

from mailer import layout
from mailer.compose import Composer, VariantKey
from mailer.errors import ConfigError
from mailer.recipients import RecipientList

_URL = r"[^\s\"'<>)]+"


def archive_urls(composer: Composer, recipients: RecipientList) -> list[str]:
    """Every archive URL in the variants this list gets (pages, images, calendars)."""
    base = composer.archive  # None for a public: false issue: it links nothing there
    if not base:
        return []
    pattern = re.compile(re.escape(base.rstrip("/")) + "/" + _URL)
    keys = [VariantKey(segments, language) for segments, language in sorted(recipients.variants())]
    found: dict[str, None] = {}
    for key in keys:
        variant = composer.variant(key)
        for text in (variant.html, variant.text):
            found.update(dict.fromkeys(pattern.findall(text)))
        # List-Archive: the reader's language index.
        found[layout.url(base, layout.index(key.language))] = None
    return list(found)


def missing(urls: Iterable[str], *, wait: float, timeout: float = 10.0) -> list[str]:
    """The URLs still not served after retrying for ``wait`` seconds."""
    pending = list(urls)
    deadline = time.monotonic() + wait
    while True:
        pending = [url for url in pending if not _served(url, timeout)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


def _served(url: str, timeout: float) -> bool:
    request = urllib.request.Request(url, headers={"User-Agent": "mailer archive check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status: int = answer.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def require_live(
    composer: Composer, recipients: RecipientList, wait: float, now: datetime | None = None
) -> None:
    """Refuse a send while any archive URL its messages hold is not served, saying the
    command that publishes this issue (plain ``mailer publish`` leaves out an issue
    whose ``send_at`` is ahead, so the advice must name it)."""
    dead = missing(archive_urls(composer, recipients), wait=wait)
    if not dead:
        return
    bulletin = composer.bulletin
    moment = now or datetime.now(UTC)
    if bulletin.send_at is not None and bulletin.send_at > moment:
        publish = (
            f"mailer publish --include {bulletin.id} (plain mailer publish leaves it out "
            f"until its send_at, {bulletin.send_at.isoformat()})"
        )
    else:
        publish = "mailer publish"
    raise ConfigError(
        f"the web archive does not serve {len(dead)} of the addresses this issue's "
        f"messages link to (first: {dead[0]}). Publish the site with {publish}, then "
        "deploy it, and run again: a send never goes out with dead links.",
        field="MAILER_ARCHIVE_URL",
    )
