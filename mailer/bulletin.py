"""Load a bulletin folder into typed, immutable models.

``bulletins/<id>/bulletin.yaml`` describes the issue; ``items/NN-slug.md`` hold
the news items (YAML front matter, then Markdown); ``NN-slug.fr.md`` and
``NN-slug.es.md`` translate an item. Everything is checked here, once, and every
error names the file, the line and the field, so staff can fix it without help.
Later stages trust these models and re-validate nothing.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import yaml
from markdown_it import MarkdownIt

from mailer.errors import ContentError, Problems
from mailer.message import RESERVED_TEXT

LANGUAGES = ("en", "fr", "es")
DEFAULT_LANGUAGE = "en"

_ITEM_FIELDS = {
    "title",
    "audience",
    "link",
    "image",
    "alt",
    "starts",
    "ends",
    "location",
    "deadline",
    "public",
    "event",
    "draft",
}
_TRANSLATION_FIELDS = {"title", "link", "alt", "location", "source"}
_BLOB_ID = re.compile(r"^[0-9a-f]{40}$")
_LOCALIZED = ("title", "subject", "preheader")
_BULLETIN_FIELDS = {"id", "date", "send_at", "segments", "items", "public"} | {
    f"{name}_{lang}" if lang != DEFAULT_LANGUAGE else name
    for name in _LOCALIZED
    for lang in LANGUAGES
}
_ABSOLUTE_LINK = re.compile(r"^(https?://[^\s/]+|mailto:[^\s]+@)")
_ITEM_FILE = re.compile(r"^(?P<slug>[^.]+)(?:\.(?P<lang>[A-Za-z_-]+))?\.md$")


@dataclass(frozen=True)
class Localized:
    """A text given in English and optionally in French and Spanish."""

    values: Mapping[str, str]

    def get(self, language: str) -> str:
        """The text in ``language``; English when no translation is given."""
        return self.values.get(language) or self.values[DEFAULT_LANGUAGE]


@dataclass(frozen=True)
class ItemText:
    """The language-dependent part of an item: what a translation may override."""

    title: str
    body: str
    link: str | None
    alt: str | None
    source: Path
    location: str | None = None  # the venue as this language names it ("Genève")
    # A translation's ``source:``: the git blob id of the English item file it was made
    # from (see translations.py); None for the English text and unstamped ones.
    translates: str | None = None


@dataclass(frozen=True)
class Item:
    """One news item; dates, venue, audience and image are shared by all languages."""

    slug: str
    source: Path
    audience: tuple[str, ...] | None
    image: Path | None
    starts: date | None
    ends: date | None
    location: str | None
    deadline: date | None
    texts: Mapping[str, ItemText]
    public: bool | None = None  # None: public when the item has no audience
    event: str | None = None  # names a meeting announced across issues (one calendar entry)
    image_type: str | None = None  # the image's MIME type, from its checked content
    # Copied by `mailer new --from` from the last issue: to edit or delete. Previews show
    # it; a real send refuses while any item is still a draft.
    draft: bool = False

    @property
    def image_file(self) -> str | None:
        """The image's name on the web archive and in messages: a short hash of its
        content, then its own name (two images with one name never collide, and a
        changed image gets a new URL, so no cache shows the old one)."""
        return image_file_name(self.image) if self.image is not None else None

    def text(self, language: str) -> ItemText:
        """The item in ``language``, falling back to English."""
        return self.texts.get(language) or self.texts[DEFAULT_LANGUAGE]

    def is_for(self, segments: Iterable[str]) -> bool:
        """Whether a reader in any of ``segments`` gets this item."""
        return self.audience is None or any(s in self.audience for s in segments)

    def is_public(self) -> bool:
        """Whether the web archive may show it: as it says, else only when it has no
        ``audience`` (it is for everyone). A note to some segments is never public
        unless it says ``public: true``, whatever segments or lists exist today."""
        if self.public is not None:
            return self.public
        return self.audience is None


@dataclass(frozen=True)
class Bulletin:
    """One issue of the bulletin, fully validated."""

    id: str
    path: Path
    title: Localized
    subject: Localized
    preheader: Localized
    date: date
    send_at: datetime | None
    segments: tuple[str, ...] | None
    items: tuple[Item, ...]
    public: bool = True  # False keeps the whole issue off the web archive

    def public_items(self) -> tuple[Item, ...]:
        """The items the web archive shows: none of a ``public: false`` issue, else those
        ``Item.is_public`` allows. The one place the rule lives (publish, compose's links
        and the calendar files all ask here)."""
        if not self.public:
            return ()
        return tuple(item for item in self.items if item.is_public())

    def refuse_drafts(self) -> None:
        """A real send refuses while an item is still a draft (``mailer new --from``)."""
        drafts = [item for item in self.items if item.draft]
        if drafts:
            raise ContentError(
                f"{len(drafts)} item(s) are still drafts copied from the last issue "
                f"({', '.join(item.slug for item in drafts)}): edit each and delete its "
                "'draft: true' line, or delete the item file.",
                file=drafts[0].source,
                field="draft",
            )

    def items_for(self, segments: Iterable[str]) -> tuple[Item, ...]:
        """The items a reader in ``segments`` receives, in bulletin order."""
        wanted = tuple(segments)
        return tuple(item for item in self.items if item.is_for(wanted))


@dataclass(frozen=True)
class _Mapping:
    """A parsed YAML mapping and the line of each key, for precise errors."""

    data: dict[str, Any]
    lines: dict[str, int]
    file: Path
    start_line: int
    # Values YAML could not build (an impossible date): reported once, with their field.
    invalid: tuple[ContentError, ...] = ()

    def line(self, key: str) -> int:
        return self.lines.get(key, self.start_line)

    def error(self, key: str, message: str) -> ContentError:
        return ContentError(message, file=self.file, line=self.line(key), field=key)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases before anything is built.

    A bulletin has no use for them, and ``&a [*b, *b, …]`` nested ten deep (an
    "alias bomb") expands to billions of values: a pull request could take CI down.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _AliasRefused(event.start_mark)
        return super().compose_node(parent, index)


class _AliasRefused(Exception):
    def __init__(self, mark: Any) -> None:
        self.mark = mark


def _excerpt(value: object, limit: int = 60) -> str:
    """A value as an error message may show it: never more than ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_mapping(text: str, file: Path, first_line: int) -> _Mapping:
    """Parse YAML text that must be a mapping; ``first_line`` is its line in ``file``."""
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        data, invalid = _construct(loader, node, file, first_line)
    except _AliasRefused as exc:
        raise ContentError(
            "YAML anchors and aliases (& and *) are not allowed in a bulletin; write the "
            "value out.",
            file=file,
            line=first_line + exc.mark.line,
        ) from None
    except RecursionError:
        raise ContentError(
            "is nested too deeply to be a bulletin's fields.", file=file, line=first_line
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = first_line + mark.line if mark is not None else first_line
        problem = getattr(exc, "problem", None) or str(exc)
        raise ContentError(
            f"YAML syntax error: {_excerpt(problem, 200)}.{_yaml_hint(problem)}",
            file=file,
            line=line,
        ) from None
    finally:
        loader.dispose()
    if data is None:
        data, node = {}, None
    if not isinstance(data, dict) or (node is not None and not isinstance(node, yaml.MappingNode)):
        raise ContentError(
            "expected 'field: value' lines (a YAML mapping).", file=file, line=first_line
        )
    lines = {}
    if node is not None:
        for key_node, _ in node.value:
            lines[str(key_node.value)] = first_line + key_node.start_mark.line
    return _Mapping({str(k): v for k, v in data.items()}, lines, file, first_line, invalid)


def _yaml_hint(problem: str) -> str:
    """What to do about the YAML mistakes people make in this content."""
    if "mapping values are not allowed" in problem:
        return (
            " A value holding a colon and a space (a title such as 'Fourteenth Meeting: "
            'outcomes\') must be in quotes: title: "Fourteenth Meeting: outcomes".'
        )
    if "found character '\\t'" in problem:
        return " YAML does not allow tabs: indent with spaces."
    if "found character '@'" in problem or "found character '`'" in problem:
        return " Put a value starting with @ or ` in quotes."
    return ""


def _construct(
    loader: yaml.SafeLoader, node: Any, file: Path, first_line: int
) -> tuple[Any, tuple[ContentError, ...]]:
    """Build the values; an impossible date (2017-02-30) becomes a located error, and
    the value is left out (absent, not "missing") so every other field is still checked.
    Every scalar is tried once, so a file's cost grows with its size, not its mistakes."""
    if node is None:
        return None, ()
    invalid: list[ContentError] = []
    for bad, field, reason in _failing_nodes(node):
        invalid.append(
            ContentError(
                f"'{_excerpt(bad.value)}' is not a valid value ({reason}); dates are "
                "YYYY-MM-DD and must exist.",
                file=file,
                line=first_line + bad.start_mark.line,
                field=field,
            )
        )
        bad.tag, bad.value = "tag:yaml.org,2002:null", ""  # left out, reported above
    try:
        return loader.construct_document(node), tuple(invalid)
    except ValueError as exc:  # not a scalar's fault: say it once, whole
        raise ContentError(f"is not valid YAML ({exc}).", file=file) from None


def _failing_nodes(node: Any, key: str | None = None) -> Iterator[tuple[Any, str | None, str]]:
    """Every scalar that cannot be built (an impossible date), with the top-level field
    it sits under; each is tried once, with a loader of its own."""
    stack: list[tuple[Any, str | None]] = [(node, key)]
    probe = yaml.SafeLoader("")
    while stack:
        current, field = stack.pop()
        if isinstance(current, yaml.ScalarNode):
            try:
                probe.construct_object(current)
            except ValueError as exc:
                yield current, field, str(exc)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((child, field) for child in reversed(current.value))
        elif isinstance(current, yaml.MappingNode):
            for name, value in reversed(current.value):
                here = field if field is not None else str(name.value)
                stack.extend([(value, here), (name, here)])


def _split_front_matter(path: Path) -> tuple[_Mapping, str, int]:
    """Split an item file into its front matter and Markdown body (with its first line)."""
    text = _read_text(path)
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ContentError(
            "an item must start with a '---' line, then its fields (title: …), then '---'.",
            file=path,
            line=1,
        )
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            front = _parse_mapping("".join(lines[1:index]), path, 2)
            return front, "".join(lines[index + 1 :]).strip("\n") + "\n", index + 2
    raise ContentError("the front matter is never closed by a '---' line.", file=path, line=1)


_LINE_BREAKS = str.maketrans(dict.fromkeys("\v\f\x1c\x1d\x1e\x85\u2028\u2029", "\n"))
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")  # C0 and C1


def _read_text(path: Path) -> str:
    """A content file's text; a byte-order mark (some Windows editors add one) is dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ContentError(
            f"not UTF-8 text ({exc.reason}); save it as UTF-8 in your editor.", file=path
        ) from None
    except OSError as exc:
        raise ContentError(f"cannot be read ({exc.strerror}).", file=path) from None
    # A word processor's manual line break (vertical tab), page break (form feed) and
    # the Unicode line and paragraph separators are line breaks to Python but not to
    # Markdown or YAML: they become plain line breaks. Any other control character is
    # refused with its line (it would reach the web archive or crash a later stage).
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LINE_BREAKS)
    if (bad := _CONTROL.search(text)) is not None:
        _refuse_at(
            text,
            bad,
            path,
            f"contains the control character U+{ord(bad.group(0)):04X}, invisible in most "
            "editors (often pasted from another program); delete it.",
        )
    if (found := RESERVED_TEXT.search(text)) is not None:
        _refuse_at(
            text,
            found,
            path,
            f"contains '{found.group(0)}', text mailer uses internally to place each reader's "
            "name and links; reword it.",
        )
    return text


def _refuse_at(text: str, found: re.Match[str], path: Path, message: str) -> NoReturn:
    """A ContentError naming the file and the line of ``found`` in ``text``."""
    raise ContentError(message, file=path, line=text.count("\n", 0, found.start()) + 1)


def _blob_id(front: _Mapping) -> str | None:
    """A translation's ``source:``, as ``mailer translations --stamp`` writes it."""
    value = _one_line(front, "source")
    if value is not None and not _BLOB_ID.match(value):
        raise front.error(
            "source",
            "is not the id mailer translations --stamp writes (40 hex digits); delete the "
            "line and stamp the translation again once it is reviewed.",
        )
    return value


def _one_line(mapping: _Mapping, key: str, *, required: bool = False) -> str | None:
    """A single-line text field; line breaks are refused because they may reach headers."""
    value = mapping.data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise mapping.error(key, "is required and missing.")
        return None
    if not isinstance(value, str | int | float):
        raise mapping.error(key, "must be a single line of text.")
    text = str(value).strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise mapping.error(key, "must be a single line of text (no line breaks).")
    return text


def _link(mapping: _Mapping, key: str) -> str | None:
    """A link must be absolute (https://, http:// or mailto:) to work in a mail client."""
    link = _one_line(mapping, key)
    if link is not None and not _ABSOLUTE_LINK.match(link):
        raise mapping.error(
            key, f"'{_excerpt(link)}' is not an absolute link; write it as https://…."
        )
    return link


def _a_date(mapping: _Mapping, key: str) -> date | None:
    value = mapping.data.get(key)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise mapping.error(key, f"'{_excerpt(value)}' is not a date; write it as YYYY-MM-DD.")


def _a_timestamp(mapping: _Mapping, key: str) -> datetime | None:
    value = mapping.data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise mapping.error(key, f"'{_excerpt(value)}' is not a timestamp.") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise mapping.error(
            key, "must be a timestamp with its time zone, e.g. 2017-03-20T09:00:00+01:00."
        )
    return value


def _a_flag(mapping: _Mapping, key: str) -> bool | None:
    """``true`` or ``false`` (YAML booleans only: "no" in quotes is not a flag)."""
    value = mapping.data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise mapping.error(key, f"'{_excerpt(value)}' is not true or false.")


def _event_key(mapping: _Mapping) -> str | None:
    """The ``event`` key: letters, digits and '-', the same in every issue announcing it."""
    key = _one_line(mapping, "event")
    if key is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", key):
        raise mapping.error("event", "use letters, digits and '-' only, e.g. 7msp-2017.")
    return key


def _segment_list(mapping: _Mapping, key: str, known: Iterable[str]) -> tuple[str, ...] | None:
    value = mapping.data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise mapping.error(key, "must be a list of segment names.")
    known_list = tuple(known)
    for segment in value:
        if segment not in known_list:
            raise mapping.error(
                key,
                f"unknown segment '{_excerpt(segment)}'; known segments: {', '.join(known_list)}.",
            )
    return tuple(dict.fromkeys(value))


def _refuse_unknown_key(mapping: _Mapping, key: str, allowed: set[str], hint: str) -> None:
    if key not in allowed:
        near = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
        guess = f" Did you mean '{near[0]}'?" if near else ""
        raise mapping.error(key, f"unknown field.{guess} {hint}")


def _check_body_links(body: str, file: Path, first_line: int) -> None:
    """Relative links in an item body would be dead in every inbox: refuse them."""
    source_lines = body.splitlines()
    for token in MarkdownIt("commonmark").parse(body):
        for child in token.children or ():
            href = child.attrGet("href") if child.type == "link_open" else None
            if isinstance(href, str) and not _ABSOLUTE_LINK.match(href):
                start, end = token.map if token.map else (0, 0)
                offset = next((i for i in range(start, end) if href in source_lines[i]), start)
                line = first_line + offset
                raise ContentError(
                    f"the link '{_excerpt(href)}' is not absolute; write it as https://….",
                    file=file,
                    line=line,
                    field="body",
                )


def _item_text(front: _Mapping, body: str, body_line: int, base: ItemText | None) -> ItemText:
    """The text of an item; a translation inherits title, link, alt and location it
    does not set. Every problem of these fields is reported at once."""
    problems = Problems()
    title = link = alt = location = translates = None
    with problems.catch():
        title = _one_line(front, "title", required=base is None)
    with problems.catch():
        _check_body_links(body, front.file, body_line)
    with problems.catch():
        if not body.strip() and base is None:
            raise ContentError("the item has no text after its front matter.", file=front.file)
    with problems.catch():
        link = _link(front, "link")
    with problems.catch():
        alt = _one_line(front, "alt")
    with problems.catch():
        location = _one_line(front, "location")
    with problems.catch():
        translates = _blob_id(front) if base is not None else None
    problems.check()
    return ItemText(
        title=title or (base.title if base else ""),
        body=body if body.strip() else (base.body if base else ""),
        link=link or (base.link if base else None),
        alt=alt or (base.alt if base else None),
        source=front.file,
        location=location or (base.location if base else None),
        translates=translates,
    )


def load_item(path: Path, folder: Path, segments: Iterable[str]) -> Item:
    """Load ``NN-slug.md`` and its ``NN-slug.<lang>.md`` translations beside it, reporting
    every problem of each file at once (a file that does not parse: its first one)."""
    known = tuple(segments)
    problems = Problems()
    front, body, body_line = _split_front_matter(path)
    problems.found.extend(front.invalid)
    for key in list(front.data):
        with problems.catch():
            _refuse_unknown_key(
                front, key, _ITEM_FIELDS, f"An item may set: {', '.join(sorted(_ITEM_FIELDS))}."
            )
    english = ItemText(title="", body="", link=None, alt=None, source=path)
    with problems.catch():
        english = _item_text(front, body, body_line, None)
    image, image_type = None, None
    with problems.catch():
        if (image_name := _one_line(front, "image")) is not None:
            image = (folder / image_name).resolve()
            if not image.is_file() or not image.is_relative_to(folder.resolve()):
                image = None
                raise front.error(
                    "image", f"'{_excerpt(image_name)}' is not a file in the bulletin folder."
                )
            image_type = _checked_image_type(image, front, image_name)
            if front.data.get("alt") is None:
                raise ContentError(
                    "an image needs alt text (field 'alt') for readers who cannot see it.",
                    file=path,
                    line=front.line("image"),
                    field="alt",
                )
    starts = ends = deadline = None
    with problems.catch():
        starts = _a_date(front, "starts")
    with problems.catch():
        ends = _a_date(front, "ends")
        if starts and ends and ends < starts:
            raise front.error("ends", "the event ends before it starts.")
    with problems.catch():
        deadline = _a_date(front, "deadline")
    audience: tuple[str, ...] | None = None
    with problems.catch():
        audience = _segment_list(front, "audience", known)
    location: str | None = None
    public: bool | None = None
    event: str | None = None
    draft = False
    with problems.catch():
        location = _one_line(front, "location")
    with problems.catch():
        public = _a_flag(front, "public")
    with problems.catch():
        event = _event_key(front)
    with problems.catch():
        draft = _a_flag(front, "draft") is True
    texts = {DEFAULT_LANGUAGE: english}
    slug = path.name.removesuffix(".md")
    for language in LANGUAGES[1:]:
        translated = path.with_name(f"{slug}.{language}.md")
        if translated.exists():
            with problems.catch():
                texts[language] = _translation(translated, english)
    problems.check()
    return Item(
        slug=slug,
        source=path,
        audience=audience,
        image=image,
        image_type=image_type,
        starts=starts,
        ends=ends,
        location=location,
        deadline=deadline,
        texts=MappingProxyType(texts),
        public=public,
        event=event,
        draft=draft,
    )


def _translation(path: Path, english: ItemText) -> ItemText:
    """One translation file, every problem of it at once."""
    problems = Problems()
    t_front, t_body, t_line = _split_front_matter(path)
    problems.found.extend(t_front.invalid)
    for key in list(t_front.data):
        with problems.catch():
            _refuse_unknown_key(
                t_front,
                key,
                _TRANSLATION_FIELDS,
                "A translation may set only title, link, alt, location (the venue in its "
                "language) and source (written by mailer translations --stamp); dates, "
                "audience and image come from the English item.",
            )
    text = english
    with problems.catch():
        text = _item_text(t_front, t_body, t_line, english)
    problems.check()
    return text


_IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


# What mail clients show: not WebP, which Outlook for Windows cannot display.
_IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif"}


def _checked_image_type(image: Path, front: _Mapping, name: str) -> str:
    """The MIME type of an item's image, when its name and its bytes agree.

    The name decides how a web server serves the file (``banner.html`` holding
    PNG bytes would be served as HTML, script and all), the bytes what it is.
    """
    expected = _IMAGE_EXTENSIONS.get(image.suffix.lower())
    if expected is None:
        raise front.error(
            "image",
            f"'{_excerpt(name)}' must be a .png, .jpg or .gif file (WebP cannot be shown by "
            "Outlook for Windows; export the image as PNG or JPEG).",
        )
    found = _image_kind(image)
    if found != expected:
        what = f"{found.upper()} data" if found else "not an image at all"
        raise front.error(
            "image",
            f"'{_excerpt(name)}' is named .{image.suffix.lower().lstrip('.')} but holds "
            f"{what}; save it again in the format its name says.",
        )
    return f"image/{found}"


@functools.lru_cache(maxsize=256)
def _content_digest(path: Path, size: int, mtime: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def image_file_name(path: Path) -> str:
    """``<12 hex digits of SHA-256>-<name>``: see ``Item.image_file``."""
    stat = path.stat()
    return f"{_content_digest(path, stat.st_size, stat.st_mtime_ns)}-{path.name}"


def _image_kind(path: Path) -> str | None:
    """The image format by its first bytes (a renamed PDF or text file is none)."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((kind for sig, kind in _IMAGE_SIGNATURES.items() if head.startswith(sig)), None)


def _item_paths(folder: Path, order: list[Any] | None, mapping: _Mapping) -> list[Path]:
    """Item files in bulletin order: the explicit ``items`` list, else file-name order."""
    items_dir = folder / "items"
    found = sorted(items_dir.glob("*.md")) if items_dir.is_dir() else []
    english = []
    for path in found:
        match = _ITEM_FILE.match(path.name)
        language = match.group("lang") if match else None
        if language is not None and language not in LANGUAGES:
            raise ContentError(
                f"unknown language '{language}' in the file name; "
                f"use one of {', '.join(LANGUAGES)}.",
                file=path,
            )
        if language is None:
            english.append(path)
        elif not path.with_name(path.name.replace(f".{language}.md", ".md")).exists():
            raise ContentError("a translation without its English item beside it.", file=path)
    if order is None:
        if not english:
            raise ContentError("the bulletin has no items (items/NN-slug.md).", file=items_dir)
        return english
    by_slug = {p.name.removesuffix(".md"): p for p in english}
    chosen = []
    for entry in order:
        slug = str(entry).removesuffix(".md")
        if slug not in by_slug:
            raise mapping.error("items", f"no item file items/{slug}.md.")
        chosen.append(by_slug[slug])
    return chosen


def bulletin_folders(root: Path) -> list[Path]:
    """Every bulletin folder under ``root`` (one holding a bulletin.yaml), in name order."""
    return sorted(p.parent for p in root.glob("*/bulletin.yaml"))


def valid_id(text: str) -> bool:
    """An issue id: letters, digits, '-', '_' and '.' (it names a folder and a ledger)."""
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text) is not None


def load_bulletin(folder: Path, segments: Iterable[str]) -> Bulletin:
    """Load and validate ``folder``; ``segments`` are the recipient segments that exist.

    Every problem is reported in one run (each file that parses, field by field; the
    first syntax error of one that does not), bulletin.yaml first, then the items.
    """
    known = tuple(segments)
    source = folder / "bulletin.yaml"
    if not source.is_file():
        raise ContentError("no bulletin.yaml in the bulletin folder.", file=source)
    problems = Problems()
    mapping = _Mapping({}, {}, source, 1)
    with problems.catch():
        mapping = _parse_mapping(_read_text(source), source, 1)
    problems.found.extend(mapping.invalid)
    for key in list(mapping.data):
        with problems.catch():
            _refuse_unknown_key(mapping, key, _BULLETIN_FIELDS, "See README, 'Writing a bulletin'.")
    issue_id: str | None = None
    if mapping.data or not problems:
        with problems.catch():
            issue_id = _issue_id(mapping, folder)
    localized = {}
    for name in _LOCALIZED:
        values: dict[str, str | None] = {}
        for language in LANGUAGES:
            key = name if language == DEFAULT_LANGUAGE else f"{name}_{language}"
            with problems.catch():
                values[language] = _one_line(
                    mapping, key, required=language == DEFAULT_LANGUAGE and bool(mapping.data)
                )
        localized[name] = Localized(
            MappingProxyType({k: v for k, v in values.items() if v is not None})
        )
    issue_date = send_at = None
    chosen_segments: tuple[str, ...] | None = None
    public = True
    with problems.catch():
        issue_date = _a_date(mapping, "date")
        date_invalid = any(problem.field == "date" for problem in mapping.invalid)
        if issue_date is None and mapping.data and not date_invalid:
            raise mapping.error("date", "is required and missing (the issue date, YYYY-MM-DD).")
    with problems.catch():
        send_at = _a_timestamp(mapping, "send_at")
    with problems.catch():
        chosen_segments = _segment_list(mapping, "segments", known)
    with problems.catch():
        public = _a_flag(mapping, "public") is not False
    order = mapping.data.get("items")
    paths: list[Path] = []
    with problems.catch():
        if order is not None and not isinstance(order, list):
            raise mapping.error("items", "must be a list of item names (01-slug).")
        paths = _item_paths(folder, order, mapping)
    items = []
    for path in paths:
        with problems.catch():
            items.append(load_item(path, folder, known))
    problems.check()
    assert issue_id is not None and issue_date is not None
    return Bulletin(
        id=issue_id,
        path=folder,
        title=localized["title"],
        subject=localized["subject"],
        preheader=localized["preheader"],
        date=issue_date,
        send_at=send_at,
        segments=chosen_segments,
        items=tuple(items),
        public=public,
    )


def _issue_id(mapping: _Mapping, folder: Path) -> str:
    issue_id = _one_line(mapping, "id", required=True)
    assert issue_id is not None
    if not valid_id(issue_id):
        raise mapping.error("id", "use letters, digits, '-', '_' and '.' only (e.g. 2017-03).")
    if issue_id != folder.resolve().name:
        # A folder copied from the last issue keeps its id; that id's ledger says
        # "sent", and the new issue would quietly go to nobody.
        raise mapping.error(
            "id",
            f"the id '{_excerpt(issue_id)}' differs from the folder name "
            f"'{folder.resolve().name}'. Was this folder copied from an earlier issue? Give "
            "the new issue its own id, and name its folder after it.",
        )
    return issue_id
