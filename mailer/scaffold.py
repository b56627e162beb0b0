"""``mailer new``: start an issue without copying a folder by hand.

A copied folder kept the old id (the new issue then "was sent" already), the old
``send_at`` and items nobody re-read. ``mailer new ID`` writes ``bulletins/ID/``
with its ``bulletin.yaml`` filled in (the id, today's date, a ``send_at`` to adjust,
titles and subjects to edit) and one draft item; with ``--from PREVIOUS`` the
previous issue's titles, segments and items (translations included) are copied,
each item marked ``draft: true``. Previews show drafts; a real send refuses while
one is left (edit it and delete the line, or delete the item). A copied
translation still says which English it translates (``source:``): once the English
item is edited, the translation shows as stale until it is reviewed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from babel.dates import format_skeleton

from mailer.bulletin import DEFAULT_LANGUAGE, LANGUAGES, valid_id
from mailer.errors import ContentError, InputError

_SEND_HOUR = 9  # a proposal; staff set the real moment
_SEND_AT_NOTE = (
    "a proposal: set the moment to send (the offset is the last issue's: summer and "
    "winter time differ)"
)


@dataclass(frozen=True)
class NewIssue:
    folder: Path
    items: list[Path]
    copied_from: str | None


def new_issue(
    root: Path,
    issue_id: str,
    *,
    previous: str | None,
    today: date,
    list_name: str,
    locales: dict[str, str],
) -> NewIssue:
    """Write ``root/issue_id``; nothing is written when the id is bad or taken."""
    if not valid_id(issue_id):
        raise InputError(
            f"'{issue_id}' is not an issue id: use letters, digits, '-', '_' and '.' "
            "(e.g. 2026-12).",
            field="ID",
        )
    folder = root / issue_id
    if folder.exists() or folder.is_symlink():
        raise InputError(f"{folder} exists already: choose another id.", field="ID")
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is not a folder of bulletins.", field="--bulletins")
    source = _previous(root, previous) if previous is not None else None
    send_at = _proposal(today, source)
    if source is not None:
        yaml_text = _from_previous(source, issue_id, today, send_at)
    else:
        month_of = _month_of(issue_id, today)
        yaml_text = _blank(issue_id, today, month_of, send_at, list_name, locales)
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise InputError(f"{folder} cannot be made ({exc.strerror}).", field="ID") from None
    try:
        (folder / "bulletin.yaml").write_text(yaml_text, encoding="utf-8")
        items = _copy_items(source, folder) if source is not None else _first_item(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return NewIssue(folder, items, previous)


def _previous(root: Path, previous: str) -> Path:
    """``--from``: an issue id under the bulletins folder, or a bulletin folder's path
    (the sample: ``examples/bulletins/2017-03``)."""
    for folder in (root / previous, Path(previous)):
        if (folder / "bulletin.yaml").is_file():
            return folder
    raise InputError(
        f"'{previous}' is neither an issue in {root}/ nor a bulletin folder (one holding a "
        "bulletin.yaml): give the last issue's id, e.g. --from 2026-09, or a folder's path, "
        "e.g. --from examples/bulletins/2017-03.",
        field="--from",
    )


def _proposal(today: date, source: Path | None) -> str:
    """The next weekday at 09:00, in the previous issue's time zone when it had one."""
    day = today + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    offset = "+00:00"
    if source is not None:
        earlier = _mapping(source).get("send_at")
        if isinstance(earlier, datetime) and earlier.tzinfo is not None:
            offset = earlier.isoformat()[-6:]
        elif isinstance(earlier, str) and len(earlier) > 6 and earlier[-6] in "+-":
            offset = earlier[-6:]
    return f"{day.isoformat()}T{_SEND_HOUR:02d}:00:00{offset}"


def _mapping(folder: Path) -> dict[str, Any]:
    path = folder / "bulletin.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:
        raise ContentError(f"cannot be read to start from ({exc}).", file=path) from None
    return data if isinstance(data, dict) else {}


def _from_previous(source: Path, issue_id: str, today: date, send_at: str) -> str:
    """The previous bulletin.yaml, line by line, with a new id, date and send_at and a
    reminder on each line a person must rewrite."""
    lines = []
    text = (source / "bulletin.yaml").read_text(encoding="utf-8-sig")
    in_items = False
    for line in text.splitlines():
        if line.startswith("# EDIT for "):
            continue  # the last issue's reminders: this one gets its own
        if in_items and (line[:1].isspace() or line.startswith("-")):
            continue  # a block-style items list: its entries go with it
        in_items = False
        key = line.split(":", 1)[0].strip()
        if key == "id":
            line = f"id: {issue_id}"
        elif key == "date":
            line = f"date: {today.isoformat()}"
        elif key == "send_at":
            line = f"send_at: {send_at}  # {_SEND_AT_NOTE}"
        elif key == "items":
            in_items = True
            continue  # the order is the items' names: the copied ones, as they are
        elif key.split("_")[0] in ("title", "subject", "preheader") and ":" in line:
            lines.append(f"# EDIT for {issue_id}: {key} (copied from {source.name})")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _month_of(issue_id: str, today: date) -> date:
    """The month an issue is for: its id's when the id is ``YYYY-MM`` (``2026-12``),
    else today's."""
    match = re.match(r"^(\d{4})-(\d{2})(?!\d)", issue_id)
    if match and 1 <= int(match[2]) <= 12:
        return date(int(match[1]), int(match[2]), 1)
    return today


def _blank(
    issue_id: str,
    today: date,
    month_of: date,
    send_at: str,
    list_name: str,
    locales: dict[str, str],
) -> str:
    """A bulletin.yaml to fill in: titles with the issue's month in each language."""
    # CLDR's month-and-year: "November 2026", "novembre 2026", "noviembre de 2026".
    month = {lang: format_skeleton("yMMMM", month_of, locale=locales[lang]) for lang in LANGUAGES}
    label = {"en": "Newsletter", "fr": "Lettre d’information", "es": "Boletín"}
    lines = [
        "# One issue of the bulletin. See README, 'Writing a bulletin'.",
        f"id: {issue_id}",
        f"date: {today.isoformat()}",
        f"send_at: {send_at}  # {_SEND_AT_NOTE}",
        "",
    ]
    for lang in LANGUAGES:
        suffix = "" if lang == DEFAULT_LANGUAGE else f"_{lang}"
        lines.append(f"title{suffix}: {_quoted(f'{list_name} — {label[lang]}, {month[lang]}')}")
    lines.append("")
    lines.append(f"# EDIT for {issue_id}: what the issue is about, in a line each")
    lines.append(f"subject: {_quoted(f'{list_name}: {month[DEFAULT_LANGUAGE]}')}")
    lines.append(f"preheader: {_quoted('The first lines readers see in their inbox.')}")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A YAML scalar that stays one string whatever it holds (a colon, a quote)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _copy_items(source: Path, folder: Path) -> list[Path]:
    """Every item and translation of the previous issue, each English item a draft."""
    items = folder / "items"
    items.mkdir()
    copied = []
    for path in sorted((source / "items").glob("*.md")):
        _refuse_link(path)
        target = items / path.name
        text = _text(path)
        language = path.name.removesuffix(".md").rpartition(".")[2]
        if language not in LANGUAGES[1:]:  # NN-slug.md (even 05-strategy-2.0.md), not .fr.md
            text = _draft(text, path)
            copied.append(target)
        target.write_text(text, encoding="utf-8")
    images = source / "images"
    if images.is_dir():
        (folder / "images").mkdir()
        for path in sorted(images.iterdir()):
            _refuse_link(path)
            if path.is_file():
                shutil.copyfile(path, folder / "images" / path.name)
    return copied


def _refuse_link(path: Path) -> None:
    """A symbolic link would copy what it points to (a key, a password file) into the
    new issue, ready to be committed: refused."""
    if path.is_symlink():
        raise ContentError("is a symbolic link: copy the file itself, not a link.", file=path)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ContentError("is not UTF-8 text: save it as UTF-8.", file=path) from None


def _draft(text: str, path: Path) -> str:
    """``draft: true`` as the front matter's first field."""
    if not text.startswith("---\n"):
        raise ContentError("an item must start with a '---' line.", file=path, line=1)
    return (
        "---\ndraft: true  # copied from the last issue: edit, then delete this line\n" + text[4:]
    )


def _first_item(folder: Path) -> list[Path]:
    items = folder / "items"
    items.mkdir()
    first = items / "01-first-item.md"
    first.write_text(
        "---\n"
        "draft: true  # delete this line once the item is written\n"
        "title: The first item's title\n"
        "# link: https://www.example.org/more  (optional)\n"
        "---\n"
        "The item's text, in Markdown. Rename the file (NN-slug.md) to order the items.\n",
        encoding="utf-8",
    )
    return [first]
