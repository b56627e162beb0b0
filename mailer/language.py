"""The reader's language: gettext catalogs for template labels, dates in their locale.

Catalogs are the ``.po`` files under ``mailer/templates/locale/<lang>/LC_MESSAGES/``
(or a project's own, see ``templating.py``),
compiled in memory at run time with Babel (no build step, nothing generated to
commit). English is the source language and needs no catalog.
"""

from __future__ import annotations

import io
from datetime import date
from functools import lru_cache
from pathlib import Path

from babel.dates import format_date, format_interval
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from mailer.errors import ContentError

DOMAIN = "messages"

# Strings composed in Python rather than in a template, marked for the catalogs.
GREETING_NAMED = "Dear %(name)s,"
GREETING_ANONYMOUS = "Dear colleague,"
SEGMENT_LABELS = {
    "states": "States",
    "international-organizations": "International organizations",
    "civil-society": "Civil society",
}
# Labels the web archive (publish.py) asks for by name.
WEB_MESSAGES = ("Past issues", "Bulletin", "Languages", "Subscribe to this archive (Atom feed)")
PYTHON_MESSAGES = (GREETING_NAMED, GREETING_ANONYMOUS, *SEGMENT_LABELS.values(), *WEB_MESSAGES)


@lru_cache(maxsize=16)
def translations(locale_dir: Path, language: str) -> NullTranslations:
    """The compiled catalog of ``language``; English gets the identity translation."""
    if language == "en":
        return NullTranslations()
    po_path = locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    try:
        with po_path.open("rb") as handle:
            catalog = read_po(handle, locale=language)
    except OSError:
        raise ContentError(f"no catalog for language '{language}'.", file=po_path) from None
    except Exception as exc:  # Babel raises several kinds for a broken .po
        raise ContentError(f"the catalog cannot be read: {exc}.", file=po_path) from None
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


# The Babel locale each language's dates are written in, unless MAILER_LOCALES says
# otherwise: English the international way (en_GB: "20 January 2027", never
# "January 20, 2027"), as the secretariat's own text writes it.
DEFAULT_LOCALES = {"en": "en_GB", "fr": "fr_FR", "es": "es_ES"}


def long_date(day: date, locale: str) -> str:
    """``18 August 2017``, ``18 août 2017``, ``18 de agosto de 2017``."""
    return str(format_date(day, "long", locale=locale))


def full_date(day: date, locale: str) -> str:
    """With the weekday, for deadlines: ``Friday, 18 August 2017``."""
    return str(format_date(day, "full", locale=locale))


def date_span(starts: date, ends: date | None, locale: str) -> str:
    """An event's dates, as one date or a range as CLDR writes it (``4–6 Sept 2017``)."""
    if ends is None or ends == starts:
        return long_date(starts, locale)
    return str(format_interval(starts, ends, "yMMMd", locale=locale))


# Before a colon, French puts a no-break space (U+00A0); English and Spanish none.
_BEFORE_COLON = {"fr": "\u00a0"}


def label(text: str, language: str) -> str:
    """A label followed by its colon, in the language's typography (``Lieu\u00a0:``).
    For template labels only: never applied to item text, URLs or times."""
    return f"{text}{_BEFORE_COLON.get(language, '')}:"


def segment_label(segment: str, catalog: NullTranslations) -> str:
    """A segment's name for readers: translated for the three standard lists."""
    label = SEGMENT_LABELS.get(segment)
    if label is None:
        return segment.replace("-", " ").replace("_", " ").capitalize()
    return str(catalog.gettext(label))


def greeting(name: str, catalog: NullTranslations) -> str:
    """``Dear Ana López,`` in the reader's language, or a neutral form without a name."""
    if name:
        return str(catalog.gettext(GREETING_NAMED)) % {"name": name}
    return str(catalog.gettext(GREETING_ANONYMOUS))
