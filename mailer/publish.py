"""``mailer publish``: the public web archive, built from public content only.

The URL scheme is permanent once mailed (README, "Web archive"); every path is
relative to ``MAILER_ARCHIVE_URL``:

- ``index.html``: the languages; ``<lang>/index.html``: the issues, newest first;
  ``<lang>/feed.atom``: an Atom feed (RFC 4287) with full content;
- ``<id>/index.html``: the issue's languages (messages link ``<id>/`` since the
  first issue); ``<id>/<lang>.html``: the issue as a public reader sees it;
- ``<id>/images/<file>``: the images messages load; ``<id>/<slug>.<lang>.ics``:
  a calendar file (RFC 5545) per event item.

An issue is published once due (``send_at`` ≤ now), once its ledger shows a send
began, or when named with ``--include``; never with ``public: false``. An item
is published when it says ``public: true``, or when it is for every segment
and does not say ``public: false``. Nothing of anything else is written: no
title in an index, no image, no calendar file. Pages carry no personal field
and no unsubscribe link. Rebuilding unchanged content gives identical files:
every time in the output comes from the content (``send_at``, the issue
date), never from the build clock.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from mailer import language as lang
from mailer import layout, templating, translations
from mailer.bulletin import LANGUAGES, Bulletin, Item, bulletin_folders, load_bulletin
from mailer.errors import ConfigError, ContentError
from mailer.ledger import LedgerDir
from mailer.recipients import available_segments
from mailer.settings import Settings

NAMES = {"en": "English", "fr": "Français", "es": "Español"}
_markdown = MarkdownIt("commonmark", {"html": False})


@dataclass
class Published:
    """What ``publish`` wrote."""

    out: Path
    issues: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def published_issues(
    root: Path, settings: Settings, now: datetime, include: Iterable[str] = ()
) -> list[Bulletin]:
    """The public issues to show, newest first."""
    known = available_segments(settings.recipients_dir)
    wanted = set(include)
    chosen = []
    seen = set()
    for folder in bulletin_folders(root):
        bulletin = load_bulletin(folder, known)
        seen.add(bulletin.id)
        if not bulletin.public:
            continue  # even when named with --include: public: false is never published
        due = bulletin.send_at is not None and bulletin.send_at <= now
        if not (due or bulletin.id in wanted or _send_began(settings, bulletin.id)):
            continue
        if any(item.draft for item in bulletin.items):
            continue  # a draft is never sent: it is never published either
        # A translation older than its English item shows the English, as its readers
        # got it (a real send refuses it, or gives them the English item).
        chosen.append(translations.without_stale(bulletin)[0])
    missing = wanted - seen
    if missing:
        raise ContentError(
            f"--include {', '.join(sorted(missing))}: no bulletin with that id.", file=root
        )
    return sorted(chosen, key=lambda b: (b.date, b.id), reverse=True)


def _send_began(settings: Settings, issue: str) -> bool:
    """Whether the issue's ledger shows a send began (an issue sent by hand stays up)."""
    return bool(LedgerDir(settings.ledger_dir).state(issue).last)


MARKER = ".mailer-site"  # written into every site publish builds: the folder is ours


def publish(
    root: Path,
    out: Path,
    settings: Settings,
    now: datetime,
    include: Iterable[str] = (),
) -> Published:
    """Build the site into ``out``, replaced whole (nothing unpublished lingers).

    The new site is built in a folder beside ``out`` and swapped in only once
    complete, so a failure leaves the old site whole; and ``out`` is replaced
    only when it is missing, empty or a site publish made (``MARKER``).
    """
    out = out.resolve()  # "." and a symlink to the site: the real folder, by its name
    _check_out(out)
    issues = published_issues(root, settings, now, include)
    site = _Site(settings, issues)
    building = out.parent / f".{out.name}.building-{os.getpid()}"
    if building.exists():
        shutil.rmtree(building)
    try:
        written = _write(site, building)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    _swap(building, out)
    result = Published(out, [b.id for b in issues])
    result.files = [out / path for path in written]
    return result


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` holding anything publish did not write: it would be deleted.

    The marker lists the files of the last build; a file beside them (a ``CNAME``, a
    ``.git``) was put there by someone else.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    marker = out / MARKER
    if out.is_dir() and marker.is_file() and not marker.is_symlink():
        ours = set(marker.read_text(encoding="utf-8").splitlines()[1:]) | {MARKER}
        foreign = [
            str(p.relative_to(out))
            for p in sorted(out.rglob("*"))
            if (p.is_file() or p.is_symlink()) and str(p.relative_to(out)) not in ours
        ]
        if not foreign:
            return
        what = f"a site publish made, but it also holds {foreign[0]}, which publish did not write"
    else:
        what = "a file" if not out.is_dir() else "a folder publish did not make"
    raise ConfigError(
        f"{what}: publish replaces its --out whole, so it builds only into a new or empty "
        f"folder, or a site it built before (it holds {MARKER}). Nothing was deleted; "
        "choose another --out (site, or docs for a Pages branch).",
        file=out,
        field="--out",
    )


def _write(site: _Site, folder: Path) -> list[Path]:
    """Every file of the site under ``folder``; the relative paths written."""
    written = []
    folder.mkdir(parents=True)
    for path, data in site.files():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            shutil.copyfile(data, target)
        else:
            target.write_bytes(data)
        written.append(Path(path))
    listing = "".join(f"{path.as_posix()}\n" for path in written)
    (folder / MARKER).write_text(
        "Built by mailer publish; replaced whole on each build. Its files:\n" + listing,
        encoding="utf-8",
    )
    return written


def _swap(new: Path, out: Path) -> None:
    """Put the finished site at ``out``; the old one goes only after the new is there."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


class _Site:
    """Renders every file of the site, as (relative path, bytes or a source file)."""

    def __init__(self, settings: Settings, issues: list[Bulletin]) -> None:
        self.settings = settings
        self.issues = issues
        self.templates = settings.templates_dir
        self.env = templating.environment(
            self.templates,
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        sender = settings.from_ or ""
        name, address = parseaddr(sender)
        self.domain = (
            address.rpartition("@")[2].lower()
            or urlsplit(settings.archive_url or "").hostname
            or "example.org"
        )
        # The list's stable name, as in every email's footer and List-Id.
        self.organization = settings.list_name or name.strip() or self.domain
        self.base = (settings.archive_url or "").rstrip("/")
        self.locales = settings.locale_map
        self.sequences = _event_sequences(issues)
        # Fixed once (RFC 4151); never derived from the issues, so it never changes.
        self.feed_tag = settings.feed_tag or f"tag:{self.domain},2026:bulletin"

    def files(self) -> Iterable[tuple[str, bytes | Path]]:
        yield layout.LANGUAGES_PAGE, self._languages_page()
        for language in LANGUAGES:
            yield layout.index(language), self._index(language)
            yield layout.feed(language), self._feed(language)
        for issue in self.issues:
            yield layout.chooser(issue.id), self._issue_chooser(issue)
            items = self.public_items(issue)
            for language in LANGUAGES:
                yield (
                    layout.issue_page(issue.id, language),
                    self._issue_page(issue, items, language),
                )
                for item in items:
                    if item.starts is not None:
                        yield (
                            _calendar_path(issue, item, language),
                            self._calendar(issue, item, language),
                        )
            images = {i.image_file: i.image for i in items if i.image and i.image_file}
            for name, image in images.items():
                yield layout.image(issue.id, name), image

    def public_items(self, issue: Bulletin) -> list[Item]:
        return list(issue.public_items())

    # -- pages ------------------------------------------------------------------------

    def _render(self, template: str, language: str, depth: int, **context: Any) -> bytes:
        catalog = templating.translations(self.templates, language)
        templating.use_language(self.env, catalog, language)
        up = "../" * depth
        context.setdefault("feed_href", f"{up}{language}/feed.atom")
        context.setdefault("feed_title", self._feed_title(language))
        context.setdefault("feed_label", catalog.gettext("Subscribe to this archive (Atom feed)"))
        context.setdefault("languages_label", catalog.gettext("Languages"))
        context.setdefault("organization", self.organization)
        context.setdefault("bulletin_name", catalog.gettext("Bulletin"))
        context.setdefault("home_href", f"{up}{language}/index.html")
        context.setdefault("nav_links", context.get("alternates", []))
        context.setdefault("logo_url", self.settings.logo_url)
        html = self.env.get_template(template).render(lang=language, **context)
        return html.encode("utf-8")

    def _languages_page(self) -> bytes:
        links = [
            {"lang": code, "name": NAMES[code], "href": f"{code}/index.html", "label": NAMES[code]}
            for code in LANGUAGES
        ]
        return self._render(
            "web/chooser.html.j2",
            "en",
            0,
            page_title=self.organization,
            heading=self.organization,
            alternates=links,
            nav_links=[],  # the page is the list of languages: no second one on top
            home_href=None,
            feed_href="en/feed.atom",
        )

    def _index(self, language: str) -> bytes:
        catalog = templating.translations(self.templates, language)
        issues = [
            {
                "href": f"../{issue.id}/{language}.html",
                "title": issue.title.get(language),
                "date": lang.long_date(issue.date, self.locales[language]),
            }
            for issue in self.issues
        ]
        heading = catalog.gettext("Past issues")
        return self._render(
            "web/index.html.j2",
            language,
            1,
            page_title=f"{heading} · {self.organization}",
            heading=heading,
            issues=issues,
            alternates=_alternates(lambda code: f"../{code}/index.html"),
            index_href="index.html",
        )

    def _issue_chooser(self, issue: Bulletin) -> bytes:
        links = _alternates(lambda code: f"{code}.html", issue.title.get)
        return self._render(
            "web/chooser.html.j2",
            "en",
            1,
            page_title=issue.title.get("en"),
            heading=issue.title.get("en"),
            alternates=links,
        )

    def _issue_page(self, issue: Bulletin, items: list[Item], language: str) -> bytes:
        views = [self._item_view(issue, item, language) for item in items]
        return self._render(
            "web/issue.html.j2",
            language,
            1,
            page_title=issue.title.get(language),
            issue={
                "title": issue.title.get(language),
                "date": lang.long_date(issue.date, self.locales[language]),
            },
            items=views,
            alternates=_alternates(lambda code: f"{code}.html"),
            index_href=f"../{language}/index.html",
        )

    def _item_view(self, issue: Bulletin, item: Item, language: str) -> dict[str, Any]:
        text = item.text(language)
        return {
            "title": text.title,
            "html": Markup(_markdown.render(text.body)),
            "when": lang.date_span(item.starts, item.ends, self.locales[language])
            if item.starts
            else None,
            "location": text.location,
            "deadline": lang.full_date(item.deadline, self.locales[language])
            if item.deadline
            else None,
            "link": text.link,
            # Links from the issue's own folder: the layout's path without "<id>/".
            "image": (
                quote(layout.image(issue.id, item.image_file).partition("/")[2])
                if item.image_file
                else None
            ),
            "alt": text.alt,
            "language": language if item.texts.get(language) else "en",
            "calendar": (
                quote(_calendar_path(issue, item, language).partition("/")[2])
                if item.starts
                else None
            ),
        }

    # -- feed -------------------------------------------------------------------------

    def _feed_title(self, language: str) -> str:
        catalog = templating.translations(self.templates, language)
        return f"{self.organization} — {catalog.gettext('Bulletin')} ({NAMES[language]})"

    def _feed(self, language: str) -> bytes:
        from feedgen.feed import FeedGenerator  # only when publishing

        feed = FeedGenerator()
        oldest = min((issue.date for issue in self.issues), default=date(2000, 1, 1))
        feed.id(f"{self.feed_tag}/{language}")  # RFC 4287 §4.2.6: never changes
        feed.title(self._feed_title(language))
        feed.author({"name": self.organization})
        feed.language(language)
        feed.link(href=self._url(layout.feed(language)), rel="self")
        feed.link(href=self._url(layout.index(language)), rel="alternate")
        updated = [_moment(issue) for issue in self.issues]
        feed.updated(max(updated, default=datetime.combine(oldest, time(), UTC)))
        for issue in reversed(self.issues):  # feedgen lists the last added first
            entry = feed.add_entry()
            entry.id(f"{self.feed_tag}/{issue.id}/{language}")
            entry.title(issue.title.get(language))
            entry.link(href=self._url(layout.issue_page(issue.id, language)), rel="alternate")
            entry.published(_moment(issue))
            entry.updated(_moment(issue))
            content = "".join(
                f"<h2>{Markup.escape(item.text(language).title)}</h2>"
                + _markdown.render(item.text(language).body)
                for item in self.public_items(issue)
            )
            entry.content(content, type="html")
        data: bytes = feed.atom_str(pretty=True)
        return data

    def _url(self, path: str) -> str:
        return layout.url(self.base, path) if self.base else layout.relative(path, 0)

    # -- calendar ---------------------------------------------------------------------

    def _calendar(self, issue: Bulletin, item: Item, language: str) -> bytes:
        """RFC 5545: an announcement (METHOD:PUBLISH, no organizer or attendees).

        The deadline, when there is one, is a second all-day event in the same
        file ("Deadline: <title>"): readers want it in their calendar too.
        """
        from icalendar import Calendar, Event  # only when publishing

        assert item.starts is not None
        catalog = templating.translations(self.templates, language)
        title = item.text(language).title
        key = item.event or f"{issue.id}-{item.slug}"
        calendar = Calendar()
        calendar.add("prodid", "-//mailer//bulletin archive//EN")
        calendar.add("version", "2.0")
        calendar.add("method", "PUBLISH")
        stamp = _moment(issue)
        event = Event()
        event.add("uid", f"{key}@{self.domain}")
        event.add("dtstamp", stamp)
        meeting_sequence, deadline_sequence = self.sequences.get((issue.id, item.slug), (0, 0))
        event.add("sequence", meeting_sequence)
        event.add("summary", title)
        event.add("dtstart", item.starts)
        event.add("dtend", (item.ends or item.starts) + timedelta(days=1))  # exclusive end
        if location := item.text(language).location:
            event.add("location", location)
        event.add("url", self._url(layout.issue_page(issue.id, language)))
        calendar.add_component(event)
        if item.deadline is not None:
            deadline = Event()
            deadline.add("uid", f"{key}-deadline@{self.domain}")
            deadline.add("dtstamp", stamp)
            deadline.add("sequence", deadline_sequence)
            deadline.add("summary", f"{catalog.gettext('Deadline')}: {title}")
            deadline.add("dtstart", item.deadline)
            deadline.add("dtend", item.deadline + timedelta(days=1))
            deadline.add("transp", "TRANSPARENT")  # a reminder, not time taken
            calendar.add_component(deadline)
        data: bytes = calendar.to_ical()
        return data


def _calendar_path(issue: Bulletin, item: Item, language: str) -> str:
    return layout.calendar(issue.id, item.slug, language)


def _moment(issue: Bulletin) -> datetime:
    """The issue's time: its ``send_at``, else its date at midnight UTC (never the clock)."""
    if issue.send_at is not None:
        return issue.send_at.astimezone(UTC)
    return datetime.combine(issue.date, time(), UTC)


def _alternates(href: Any, label: Any = None) -> list[dict[str, str]]:
    return [
        {
            "lang": code,
            "name": NAMES[code],
            "href": href(code),
            "label": label(code) if label else NAMES[code],
        }
        for code in LANGUAGES
    ]


def _event_sequences(issues: list[Bulletin]) -> dict[tuple[str, str], tuple[int, int]]:
    """SEQUENCE per (issue, item), for its meeting and its deadline event (RFC 5545
    §3.8.7.4: a revision, raised by one each time the event differs from the previous
    published issue that announced it: dates, venue or title; the deadline's date).

    Derived from every published issue in order, so a rebuild gives the same numbers,
    and dates moved and moved back (A, B, A) give 0, 1, 2.
    """
    last: dict[str, tuple[tuple[object, ...], int]] = {}
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for issue in sorted(issues, key=lambda b: (b.date, b.id)):
        for item in issue.public_items():
            if item.event is None or item.starts is None:
                continue
            title = item.text("en").title
            meeting = _revision(last, item.event, (item.starts, item.ends, item.location, title))
            deadline = _revision(last, f"{item.event}-deadline", (item.deadline,))
            found[(issue.id, item.slug)] = (meeting, deadline)
    return found


def _revision(
    last: dict[str, tuple[tuple[object, ...], int]], key: str, version: tuple[object, ...]
) -> int:
    """The SEQUENCE of ``key`` at ``version``: the previous one's, plus one if it changed."""
    previous = last.get(key)
    number = 0 if previous is None else previous[1] + (previous[0] != version)
    last[key] = (version, number)
    return number
