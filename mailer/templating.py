"""Templates and catalogs: the bundled ones, and a project's own overriding them file by file.

The templates and gettext catalogs ship inside the package (``mailer/templates``),
so an installed mailer works from any folder. A project overrides any of them by
putting a file of the same name in its own folder: ``MAILER_TEMPLATES_DIR``, else
``templates/`` in the current folder when there is one (a checkout, as in CI). A
template is looked up there first, then in the bundled set; a catalog
(``locale/<lang>/LC_MESSAGES/messages.po``) likewise, per language.

This module makes every Jinja environment (compose, publish, serve), so the
i18n extension and the override rule live in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from babel.support import NullTranslations

from mailer import language as lang
from mailer.errors import ConfigError

BUNDLED = Path(__file__).resolve().parent / "templates"


def search_path(override: Path | None) -> list[Path]:
    """Where templates are looked up, first match wins: the project's, then the bundled."""
    if override is None and Path("templates").is_dir():
        override = Path("templates")
    if override is None or override.resolve() == BUNDLED:
        return [BUNDLED]
    if not override.is_dir():
        raise ConfigError(
            "is not a folder of templates.", file=override, field="MAILER_TEMPLATES_DIR"
        )
    return [override, BUNDLED]


def environment(override: Path | None, **options: Any) -> jinja2.Environment:
    """A Jinja environment over ``search_path(override)`` with the i18n extension."""
    loaders = [jinja2.FileSystemLoader(str(folder)) for folder in search_path(override)]
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders), extensions=["jinja2.ext.i18n"], **options
    )


def translations(override: Path | None, language: str) -> NullTranslations:
    """The catalog of ``language``: the project's, when it has one, else the bundled."""
    for folder in search_path(override):
        if (folder / "locale" / language / "LC_MESSAGES" / f"{lang.DOMAIN}.po").is_file():
            return lang.translations(folder / "locale", language)
    return lang.translations(BUNDLED / "locale", language)


def use_language(env: jinja2.Environment, catalog: NullTranslations, language: str) -> None:
    """Render the next templates of ``env`` in ``language`` (``catalog`` is its catalog):
    its labels, and the ``label`` filter that writes a label's colon its way."""
    env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    env.filters["label"] = lambda text: lang.label(str(text), language)


def unknown_overrides(override: Path | None) -> list[str]:
    """Files of a project's templates folder that override nothing (a typo in a name):
    they are silently never used, so ``mailer check`` names them."""
    folders = search_path(override)
    if len(folders) == 1:
        return []
    own = folders[0]
    return sorted(
        str(path.relative_to(own))
        for path in own.rglob("*")
        if path.is_file()
        and path.suffix in (".j2", ".po")
        and not (BUNDLED / path.relative_to(own)).is_file()
    )
