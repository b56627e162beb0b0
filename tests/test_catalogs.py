"""Every label a template or the composer shows is translated in French and Spanish."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from jinja2.ext import babel_extract

from mailer.language import PYTHON_MESSAGES

PLACEHOLDER = re.compile(r"%\((\w+)\)s")
TEMPLATES = Path(__file__).resolve().parent.parent / "mailer" / "templates"


def _template_messages() -> set[str]:
    found: set[str] = set()
    for path in TEMPLATES.rglob("*.j2"):
        with path.open("rb") as handle:
            for _, _, message, _ in babel_extract(
                handle, ("_", "gettext"), [], {"extensions": "jinja2.ext.i18n"}
            ):
                found.add(message if isinstance(message, str) else str(next(iter(message or [""]))))
    return found


@pytest.mark.parametrize("language", ["fr", "es"])
def test_catalog_translates_every_label(language: str) -> None:
    wanted = _template_messages() | set(PYTHON_MESSAGES)
    assert "Read more" in wanted and "Deadline" in wanted
    with (TEMPLATES / "locale" / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale=language)
    for message in wanted:
        entry = catalog.get(message)
        assert entry is not None and entry.string, f"{language}: '{message}' is not translated"
        translated = str(entry.string)
        assert sorted(PLACEHOLDER.findall(message)) == sorted(PLACEHOLDER.findall(translated))


def test_french_labels_follow_french_typography() -> None:
    """A no-break space before ':' and a narrow one before '?', '!' and ';', in every
    French label (item text is the writers' own and never touched)."""
    with (TEMPLATES / "locale" / "fr" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="fr")
    for entry in catalog:
        if not entry.id:
            continue  # the catalog's header
        text = str(entry.string)
        for mark in ":?!;":
            for found in re.finditer(re.escape(mark), text):
                before = text[found.start() - 1] if found.start() else ""
                if mark == ":" and text[found.start() + 1 : found.start() + 3] == "//":
                    continue  # a URL
                assert before in ("\u00a0", "\u202f", ")"), f"{entry.id!r}: {text!r}"
