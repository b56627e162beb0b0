"""Translation integrity: each translation says which version of its English item it
translates, so a changed English item (a date moved, a deadline extended) cannot
reach French or Spanish readers in its old words unnoticed.

A translation ``NN-slug.fr.md`` carries ``source: <id>``, the git blob id of the
English item file it was made from: SHA-1 of ``blob <size>\\0<content>``, the id
git itself gives that file (``git hash-object``), so it is computed without git
and, when the file is in the repository's history, git can show what changed.
``mailer translations BULLETIN --stamp ITEM`` writes it after a translator's review.

A translation is then:

- ``current``: its ``source`` is the English file as it is now;
- ``stale``: its ``source`` is an older English file: ``mailer check`` lists it
  (with the English change word by word when git has the old text), and a real
  send refuses until it is stamped again, or with ``--allow-stale-translations``
  sends those readers the English item instead;
- ``unstamped``: no ``source`` (made before this existed): reported, never blocking;
- ``missing``: no translation (readers get the English item, as always).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from mailer.bulletin import DEFAULT_LANGUAGE, LANGUAGES, Bulletin, Item
from mailer.errors import ContentError


class State(StrEnum):
    CURRENT = "current"
    STALE = "stale"
    UNSTAMPED = "unstamped"
    MISSING = "missing"


@dataclass(frozen=True)
class Translation:
    """One item in one language, and where it stands against its English source."""

    item: Item
    language: str
    state: State
    path: Path  # the translation file (which may not exist: missing)
    recorded: str | None  # the English blob id it says it translates

    @property
    def name(self) -> str:
        """``01-7msp-save-the-date.fr``: how staff name it to --stamp."""
        return f"{self.item.slug}.{self.language}"


def blob_id(data: bytes) -> str:
    """Git's blob id of a text file's bytes (``git hash-object FILE``), line ends
    normalized to LF as git stores text (a Windows checkout's CRLF gives the same id)."""
    data = data.replace(b"\r\n", b"\n")
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


_DRAFT_LINE = re.compile(rb"^draft:[^\n]*\n", re.MULTILINE)


def english_id(path: Path) -> str:
    """The id a translation records for its English item: the file's blob id, its
    ``draft:`` line aside (``mailer new --from`` adds one to a copy; deleting it once
    the item is edited must not make a still-true translation stale)."""
    data = path.read_bytes().replace(b"\r\n", b"\n")
    head, sep, rest = data.partition(b"\n---")
    return blob_id(_DRAFT_LINE.sub(b"", head, count=1) + sep + rest)


def of(bulletin: Bulletin) -> list[Translation]:
    """Every item in every language but English, in bulletin order."""
    found = []
    for item in bulletin.items:
        english = english_id(item.source)
        for language in LANGUAGES:
            if language == DEFAULT_LANGUAGE:
                continue
            path = item.source.with_name(f"{item.slug}.{language}.md")
            text = item.texts.get(language)
            if text is None:
                state, recorded = State.MISSING, None
            elif text.translates is None:
                state, recorded = State.UNSTAMPED, None
            else:
                recorded = text.translates
                state = State.CURRENT if recorded == english else State.STALE
            found.append(Translation(item, language, state, path, recorded))
    return found


def stale(bulletin: Bulletin) -> list[Translation]:
    return [t for t in of(bulletin) if t.state is State.STALE]


def refuse_stale(bulletin: Bulletin) -> None:
    """A real send refuses while a translation says the English changed since."""
    found = stale(bulletin)
    if not found:
        return
    names = ", ".join(t.name for t in found)
    raise ContentError(
        f"the English of {len(found)} translated item(s) changed after their translation "
        f"was made ({names}): their readers would get the old text. Have them reviewed "
        f"(mailer check shows what changed, when the stamped English is in git), then run "
        f"mailer translations {bulletin.path} "
        "--stamp NAME; or send with --allow-stale-translations, and those readers get "
        "the English item.",
        file=found[0].path,
        field="source",
    )


def without_stale(bulletin: Bulletin) -> tuple[Bulletin, list[Translation]]:
    """The bulletin with its stale translations left out (their readers get English),
    and those left out, for the summary."""
    dropped = stale(bulletin)
    if not dropped:
        return bulletin, []
    gone = {(t.item.slug, t.language) for t in dropped}
    items = tuple(
        replace(
            item,
            texts=MappingProxyType(
                {lang: text for lang, text in item.texts.items() if (item.slug, lang) not in gone}
            ),
        )
        for item in bulletin.items
    )
    return replace(bulletin, items=items), dropped


def stamp(bulletin: Bulletin, names: list[str]) -> list[Path]:
    """Record in each named translation (``SLUG`` for all its languages, or
    ``SLUG.fr``) that it translates the English item as it is now."""
    every = {t.name: t for t in of(bulletin) if t.state is not State.MISSING}
    chosen: dict[str, Translation] = {}
    for name in names:
        matches = [t for key, t in every.items() if name in (key, t.item.slug)]
        if not matches:
            known = ", ".join(sorted(every)) or "none"
            raise ContentError(
                f"'{name}' names no translation of this bulletin (translations: {known}).",
                file=bulletin.path,
                field="--stamp",
            )
        chosen.update((t.name, t) for t in matches)
    written = []
    for translation in chosen.values():
        english = english_id(translation.item.source)
        _write_source(translation.path, english)
        written.append(translation.path)
    return written


def _write_source(path: Path, blob: str) -> None:
    """Set ``source: <blob>`` in the front matter (closed, as the loader reads it, by a
    line that is ``---`` once stripped), every other byte as it was, line ends included."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    close = (
        next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if lines and lines[0].strip() == "---"
        else None
    )
    if close is None:
        raise ContentError("has no front matter to stamp.", file=path, line=1)
    ending = "\r\n" if lines[0].endswith("\r\n") else "\n"
    line = f"source: {blob}{ending}"
    found = [i for i in range(1, close) if lines[i].startswith("source:")]
    if found:
        lines[found[0]] = line
    else:
        lines.insert(close, line)
    # Written beside, then swapped in: a crash mid-write never leaves half a translation.
    fresh = path.with_name(f".{path.name}.stamping")
    with fresh.open("w", encoding="utf-8", newline="") as handle:
        handle.write("".join(lines))
    os.replace(fresh, path)


def english_change(translation: Translation) -> str | None:
    """What changed in the English item since the translation, word by word
    (``[-old-]{+new+}``), when git still has the old text; None otherwise (a shallow
    clone, or a file never committed): the ids alone still say it is stale."""
    if translation.recorded is None:
        return None
    try:
        old = subprocess.run(
            ["git", "cat-file", "blob", translation.recorded],
            cwd=translation.item.source.parent,
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None
    new = translation.item.source.read_text(encoding="utf-8-sig", errors="replace")
    return word_diff(old, new)


def word_diff(old: str, new: str, limit: int = 400) -> str:
    """The changed words only, git's --word-diff=plain way, cut at ``limit`` characters."""
    before, after = old.split(), new.split()
    parts = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        removed, added = " ".join(before[i1:i2]), " ".join(after[j1:j2])
        parts.append((f"[-{removed}-]" if removed else "") + (f"{{+{added}+}}" if added else ""))
    text = " … ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
