"""The web archive's permanent URL scheme, in one place.

Links in sent mail last forever, so these paths never change (README, "Web
archive"). Every file path publish writes and every URL a message links comes
from here: compose, publish and the liveness check cannot disagree. Paths are
the files' names on disk; URLs are percent-encoded (RFC 3986), so an item file
named ``04-séminaire.md`` links ``04-s%C3%A9minaire.en.ics``.
"""

from __future__ import annotations

from urllib.parse import quote

LANGUAGES_PAGE = "index.html"


def index(language: str) -> str:
    """The issues in ``language``, newest first."""
    return f"{language}/index.html"


def feed(language: str) -> str:
    """The Atom feed in ``language``."""
    return f"{language}/feed.atom"


def chooser(issue: str) -> str:
    """The issue's page of languages."""
    return f"{issue}/index.html"


def issue_page(issue: str, language: str) -> str:
    """The issue as a public reader sees it, in ``language``."""
    return f"{issue}/{language}.html"


def calendar(issue: str, slug: str, language: str) -> str:
    """An item's calendar file."""
    return f"{issue}/{slug}.{language}.ics"


def image(issue: str, file_name: str) -> str:
    """An image of a public item (``Item.image_file``: named by its content)."""
    return f"{issue}/images/{file_name}"


def url(base: str, path: str) -> str:
    """The absolute, percent-encoded URL of ``path`` under the archive's ``base``."""
    return f"{base.rstrip('/')}/{quote(path)}"


def relative(path: str, depth: int) -> str:
    """``path`` as a link from a page ``depth`` folders down, percent-encoded."""
    return "../" * depth + quote(path)
