"""The public web archive: only public content, permanent URLs, feeds and calendar files
that pass their parsers, and every archive URL a message holds served by the site."""

from __future__ import annotations

import functools
import mailbox
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import feedparser
import icalendar
import pytest
import vobject
from typer.testing import CliRunner

from mailer import archive, pipeline
from mailer.bulletin import image_file_name
from mailer.cli import app
from mailer.errors import ConfigError

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, edit, html_of, make_settings, mbox_messages
from .helpers import Sample, cli_env, send_cli, settings_for
from .smtp_server import Server, free_port

ARCHIVE = "https://isu.example.org/bulletin"
AFTER_SEND = "2017-03-28T10:00:00+02:00"
BEFORE_SEND = "2017-03-27T10:00:00+02:00"


def _when(value: Any) -> object:
    """A parsed date property's value (icalendar types every property as a union)."""
    return value.dt


def _publish(root: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(
        app,
        [
            "publish",
            "--bulletins",
            str(root),
            "--out",
            str(out),
            "--recipients",
            str(SAMPLE_RECIPIENTS),
            *args,
        ],
        env={
            "MAILER_ARCHIVE_URL": ARCHIVE,
            "MAILER_FROM": "ISU-CCM <newsletter@isu.example.org>",
            **(env or {}),
        },
    )
    assert result.exit_code == 0, result.output
    return result.output


def _two_issues(tmp_path: Path) -> Path:
    """2017-03 (the sample) and 2017-06, which re-announces the same meeting."""
    root = tmp_path / "bulletins"
    shutil.copytree(SAMPLE, root / "2017-03")
    later = root / "2017-06"
    shutil.copytree(SAMPLE, later)
    edit(later / "bulletin.yaml", "id: 2017-03", "id: 2017-06")
    edit(later / "bulletin.yaml", "date: 2017-03-27", "date: 2017-06-20")
    edit(
        later / "bulletin.yaml",
        "send_at: 2017-03-28T09:00:00+02:00",
        "send_at: 2017-06-21T09:00:00+02:00",
    )
    return root


def _files(site: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(site)): p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()
    }


def test_the_sample_publishes_every_language_and_rebuilds_identically(tmp_path: Path) -> None:
    site = tmp_path / "site"
    output = _publish(SAMPLE.parent, site, "--now", AFTER_SEND)
    assert "Published issues: 2017-03" in output
    files = _files(site)
    banner = "2017-03/images/" + image_file_name(SAMPLE / "images" / "7msp-banner.png")
    for path in ("index.html", "2017-03/index.html", banner):
        assert path in files
    for language in ("en", "fr", "es"):
        assert f"2017-03/{language}.html" in files and f"{language}/feed.atom" in files
        page = files[f"2017-03/{language}.html"].decode()
        assert f'<html lang="{language}"' in page
        assert 'hreflang="fr" href="fr.html"' in page
        assert 'type="application/atom+xml"' in page
    again = tmp_path / "again"
    _publish(SAMPLE.parent, again, "--now", "2026-11-28T00:00:00+00:00")  # another clock
    assert _files(again) == files


def test_no_personal_data_and_no_token_reach_the_site(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _publish(SAMPLE.parent, site, "--now", AFTER_SEND)
    addresses = {
        line.split(",")[0]
        for csv in SAMPLE_RECIPIENTS.glob("*.csv")
        for line in csv.read_text().splitlines()[1:]
    }
    everything = b"".join(_files(site).values()).decode("utf-8", "replace")
    assert not [a for a in addresses if a and a in everything]
    assert "token=" not in everything and "unsubscribe" not in everything.lower()
    assert "Dear" not in everything  # no greeting by name


def test_a_narrow_or_private_item_and_an_undue_issue_leave_no_trace(tmp_path: Path) -> None:
    root = _two_issues(tmp_path)
    item = root / "2017-03" / "items" / "04-bangkok-regional-seminar.md"
    edit(item, "title:", "public: false\ntitle:")
    site = tmp_path / "site"
    _publish(root, site, "--now", AFTER_SEND)
    files = _files(site)
    assert not [p for p in files if p.startswith("2017-06")]  # not due: nothing at all
    everything = b"".join(files.values()).decode("utf-8", "replace")
    assert "June" not in everything and "2017-06" not in everything
    page = files["2017-03/en.html"].decode()
    assert "Bangkok" not in page and "04-bangkok" not in " ".join(files)
    assert "NDM-UN" not in page  # for States and organizations only: not for the web
    assert "Seventh Meeting of States Parties" in page
    _publish(root, site, "--now", AFTER_SEND, "--include", "2017-06")
    assert "2017-06/en.html" in _files(site)


def test_the_feed_parses_with_stable_ids_and_times_from_the_content(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _publish(_two_issues(tmp_path), site, "--now", "2017-07-01T00:00:00+00:00")
    for language in ("en", "fr", "es"):
        feed = feedparser.parse((site / language / "feed.atom").read_bytes())
        assert not feed.bozo, feed.bozo_exception
        assert feed.feed.id.startswith("tag:isu.example.org,")
        assert feed.feed.author == "ISU-CCM"
        assert [link.href for link in feed.feed.links if link.rel == "self"] == [
            f"{ARCHIVE}/{language}/feed.atom"
        ]
        ids = [entry.id for entry in feed.entries]
        assert ids == [
            f"tag:isu.example.org,2026:bulletin/2017-06/{language}",
            f"tag:isu.example.org,2026:bulletin/2017-03/{language}",
        ]
        assert feed.entries[1].updated_parsed[:5] == (2017, 3, 28, 7, 0)  # send_at, in UTC
        assert feed.entries[0].link == f"{ARCHIVE}/2017-06/{language}.html"
        assert "Seventh Meeting" in feed.entries[0].content[0].value or language != "en"


def test_calendar_files_announce_one_event_across_issues(tmp_path: Path) -> None:
    root = _two_issues(tmp_path)
    edit(
        root / "2017-06" / "items" / "01-7msp-save-the-date.md",
        "ends: 2017-09-06",
        "ends: 2017-09-08",
    )
    stale = tmp_path / "stale-site"
    _publish(root, stale, "--now", "2017-07-01T00:00:00+00:00")
    french = (stale / "2017-06" / "01-7msp-save-the-date.fr.ics").read_text()
    assert "Save the date" in french  # not reviewed since the English changed: English
    # Reviewed: the translator's French (its own dates follow the English item's).
    stamp = ["translations", str(root / "2017-06"), "--recipients", str(SAMPLE_RECIPIENTS)]
    assert CliRunner().invoke(app, [*stamp, "--stamp", "01-7msp-save-the-date"]).exit_code == 0
    site = tmp_path / "site"
    _publish(root, site, "--now", "2017-07-01T00:00:00+00:00")
    events = {}
    for issue in ("2017-03", "2017-06"):
        raw = (site / issue / "01-7msp-save-the-date.fr.ics").read_bytes()
        calendar = icalendar.Calendar.from_ical(raw)
        assert calendar["METHOD"] == "PUBLISH" and calendar["VERSION"] == "2.0"
        assert b"ORGANIZER" not in raw and b"ATTENDEE" not in raw
        assert b"DTSTART;VALUE=DATE:20170904" in raw
        event, deadline = calendar.walk("VEVENT")
        assert str(event["SUMMARY"]).startswith("À vos agendas")
        assert str(event["LOCATION"]) == "Palais des Nations, Genève"  # the venue in French
        assert _when(event["DTSTART"]) == date(2017, 9, 4)
        assert _when(deadline["DTSTART"]) == date(2017, 8, 18)
        events[issue] = event
    assert events["2017-03"]["UID"] == events["2017-06"]["UID"] == "7msp-2017@isu.example.org"
    assert (events["2017-03"]["SEQUENCE"], events["2017-06"]["SEQUENCE"]) == (0, 1)
    assert events["2017-03"]["SEQUENCE"] == 0
    assert _when(events["2017-03"]["DTEND"]) == date(2017, 9, 7)  # exclusive end
    assert _when(events["2017-03"]["DTSTAMP"]) == datetime.fromisoformat(
        "2017-03-28T07:00:00+00:00"
    )


def test_every_archive_url_in_a_message_is_a_file_of_the_site(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _publish(SAMPLE.parent, site, "--now", AFTER_SEND)
    settings = make_settings(archive_url=ARCHIVE)
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=SAMPLE_RECIPIENTS)
    result = pipeline.preview(job, tmp_path / "previews")
    found = set()
    for key in mailbox.mbox(str(result.mbox)).iterkeys():
        data = mailbox.mbox(str(result.mbox)).get_bytes(key).decode("utf-8", "replace")
        data = re.sub(r"=\r?\n", "", data).replace("=3D", "=")  # undo quoted-printable
        found |= set(re.findall(re.escape(ARCHIVE) + r"/[^\s\"'<>)]+", data))
    assert found, "the messages link the archive"
    assert {url.rsplit(".", 1)[1] for url in found} >= {"html", "png", "ics"}
    for message in mbox_messages(result.mbox):
        language = re.search(r'<html lang="(\w+)"', html_of(message))[1]  # type: ignore[index]
        assert message["List-Archive"] == f"<{ARCHIVE}/{language}/index.html>"
        assert message["Archived-At"] == f"<{ARCHIVE}/2017-03/{language}.html>"
    for url in found:
        assert (site / url.removeprefix(ARCHIVE + "/")).is_file(), url


def test_a_bulletin_sent_by_hand_stays_published(tmp_path: Path) -> None:
    root = _two_issues(tmp_path)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "2017-06.jsonl").write_text(
        '{"recipient": "a@example.org", "outcome": "sent", "attempt": 1}\n'
    )
    site = tmp_path / "site"
    _publish(root, site, "--now", BEFORE_SEND, env={"MAILER_LEDGER_DIR": str(ledger)})
    files = _files(site)
    assert "2017-06/en.html" in files and "2017-03/en.html" not in files
    assert "2017-06/en.html" in files["en/index.html"].decode()


def test_an_image_of_an_item_not_on_the_web_is_embedded_not_linked(tmp_path: Path) -> None:
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    edit(bulletin / "items" / "01-7msp-save-the-date.md", "title:", "public: false\ntitle:")
    site = tmp_path / "site"
    _publish(bulletin.parent, site, "--now", AFTER_SEND)
    assert not (site / "2017-03" / "images").exists()
    settings = make_settings(archive_url=ARCHIVE)
    job = pipeline.prepare(bulletin, settings, recipients_dir=SAMPLE_RECIPIENTS)
    html = html_of(mbox_messages(pipeline.preview(job, tmp_path / "p").mbox)[0])
    assert "/images/" not in html and 'src="cid:' in html


@pytest.fixture
def served_site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path/site`` (empty until built)."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(_QuietFiles, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield site, f"http://127.0.0.1:{server.server_address[1]}/bulletin"
    finally:
        server.shutdown()
        server.server_close()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.system
def test_a_send_refuses_while_the_archive_is_not_live(
    served_site: tuple[Path, str], tmp_path: Path
) -> None:
    root, base = served_site
    with Server() as relay:
        env = {
            **cli_env(relay.port, tmp_path / "ledger"),
            "MAILER_ARCHIVE_URL": base,
            "MAILER_ARCHIVE_WAIT": "0.5",
        }
        recipients = settings_for(relay.port, tmp_path).recipients_dir
        refused = send_cli(recipients, env)
        assert refused.exit_code == 2, refused.output
        assert "does not serve" in refused.output and "dead links" in refused.output
        assert "with mailer publish, then deploy it" in " ".join(refused.output.split())
        assert relay.received == []
        # Before its send_at, plain `mailer publish` leaves the issue out: say --include.
        early = pipeline.prepare(SAMPLE, settings_for(relay.port, tmp_path, archive_url=base))
        with pytest.raises(ConfigError, match=r"mailer publish --include 2017-03 \(plain"):
            archive.require_live(
                early.composer, early.recipients, 0, now=datetime(2017, 3, 1, tzinfo=UTC)
            )
        checked = CliRunner().invoke(
            app, ["check", str(SAMPLE), "--recipients", str(recipients)], env=env
        )
        assert checked.exit_code == 0 and "a real send refuses until it does" in checked.output
        _publish(
            SAMPLE.parent, root / "bulletin", "--now", AFTER_SEND, env={"MAILER_ARCHIVE_URL": base}
        )
        sent = send_cli(recipients, env)
        assert sent.exit_code == 0, sent.output
        assert len(relay.received) == 13


def test_every_calendar_file_parses_and_holds_its_items_dates(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _publish(SAMPLE.parent, site, "--now", AFTER_SEND)
    calendars = sorted(site.rglob("*.ics"))
    assert len(calendars) == 6  # two items with dates, three languages
    for path in calendars:
        slug = path.name.split(".")[0]
        front = (SAMPLE / "items" / f"{slug}.md").read_text()
        starts = re.search(r"^starts: (\S+)", front, re.MULTILINE)[1]  # type: ignore[index]
        event = icalendar.Calendar.from_ical(path.read_bytes()).walk("VEVENT")[0]
        assert _when(event["DTSTART"]) == date.fromisoformat(starts), path.name


def test_indexes_list_issues_newest_first(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _publish(_two_issues(tmp_path), site, "--now", "2017-07-01T00:00:00+00:00")
    index = (site / "fr" / "index.html").read_text()
    assert index.index("../2017-06/fr.html") < index.index("../2017-03/fr.html")


def test_without_an_archive_messages_have_no_calendar_link(sample_messages: list[Any]) -> None:
    for message in sample_messages:
        assert b".ics" not in message.data and b"List-Archive" not in message.data


def test_an_item_for_the_only_segment_of_an_issue_stays_off_the_web(tmp_path: Path) -> None:
    """`segments: [states]` and an item `audience: [states]` ("do not circulate") was
    published: "for everyone" was judged against the issue's own segments."""
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    edit(
        bulletin / "bulletin.yaml",
        "segments: [states, international-organizations, civil-society]",
        "segments: [states]",
    )
    edit(
        bulletin / "items" / "03-oslo-process-ten-years.md",
        "title:",
        "audience: [states]\ntitle:",
    )
    site = tmp_path / "site"
    _publish(bulletin.parent, site, "--now", AFTER_SEND)
    everything = b"".join(_files(site).values()).decode("utf-8", "replace")
    assert "Oslo" not in everything and "Seventh Meeting of States Parties" in everything


def test_deleting_a_list_publishes_nothing_new(tmp_path: Path) -> None:
    """Without civil-society.csv, an item for States and organizations was 'for everyone'."""
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    edit(
        bulletin / "bulletin.yaml",
        "segments: [states, international-organizations, civil-society]\n",
        "",
    )
    lists = tmp_path / "recipients"
    shutil.copytree(SAMPLE_RECIPIENTS, lists)
    (lists / "civil-society.csv").unlink()
    site = tmp_path / "site"
    result = CliRunner().invoke(
        app,
        [
            "publish",
            "--bulletins",
            str(bulletin.parent),
            "--out",
            str(site),
            "--recipients",
            str(lists),
            "--now",
            AFTER_SEND,
        ],
        env={"MAILER_ARCHIVE_URL": ARCHIVE, "MAILER_FROM": "ISU <n@isu.example.org>"},
    )
    assert result.exit_code == 0, result.output
    page = (site / "2017-03" / "en.html").read_text()
    assert "NDM-UN" not in page  # audience [states, international-organizations]


def test_a_private_issue_links_nothing_on_the_archive_and_can_be_sent(
    served_site: tuple[Path, str], tmp_path: Path
) -> None:
    """A public: false issue carried Archived-At, view-in-browser, calendar and image URLs
    publish never writes: the liveness check refused every real send."""
    _, base = served_site
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    edit(bulletin / "bulletin.yaml", "id: 2017-03", "id: 2017-03\npublic: false")
    with Server() as relay:
        env = {
            **cli_env(relay.port, tmp_path / "ledger"),
            "MAILER_ARCHIVE_URL": base,
            "MAILER_ARCHIVE_WAIT": "0.2",
        }
        recipients = settings_for(relay.port, tmp_path).recipients_dir
        args = ["send", str(bulletin), "--recipients", str(recipients), "--yes"]
        sent = CliRunner().invoke(app, args, env=env)
        assert sent.exit_code == 0, sent.output
        assert len(relay.received) == 13
        raw = relay.received[0].data.decode("utf-8", "replace")
    assert base not in raw and "Archived-At" not in raw and "List-Archive" not in raw
    assert 'src="cid:' in html_of(relay.received[0].message())


@pytest.mark.parametrize("where", ["cwd", "git", "file"])
def test_publish_deletes_nothing_it_did_not_make(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mailer publish --out .` deleted the working tree (bulletins, recipients, ledger)."""
    work = tmp_path / "work"
    shutil.copytree(SAMPLE, work / "bulletins" / "2017-03")
    (work / "ledger").mkdir()
    (work / "ledger" / "2017-03.jsonl").write_text("{}\n")
    out = {"cwd": Path("."), "git": work / "pages", "file": work / "ledger" / "2017-03.jsonl"}[
        where
    ]
    if where == "git":
        (work / "pages" / ".git").mkdir(parents=True)
    monkeypatch.chdir(work)
    before = sorted(str(p) for p in work.rglob("*"))
    result = CliRunner().invoke(
        app,
        ["publish", "--bulletins", "bulletins", "--out", str(out), "--now", AFTER_SEND],
        env={"MAILER_ARCHIVE_URL": ARCHIVE},
    )
    assert result.exit_code == 2, result.output
    assert "--out" in result.output and "Nothing was deleted" in " ".join(result.output.split())
    assert sorted(str(p) for p in work.rglob("*")) == before


def test_publish_replaces_only_a_site_it_made_and_only_once_the_new_one_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "docs"
    site.mkdir()  # empty: fine
    _publish(SAMPLE.parent, site, "--now", AFTER_SEND)
    first = _files(site)
    assert ".mailer-site" in first
    _publish(SAMPLE.parent, site, "--now", AFTER_SEND)  # its own site: replaced
    assert _files(site) == first

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)  # the image copy fails mid-build
    result = CliRunner().invoke(
        app,
        ["publish", "--bulletins", str(SAMPLE.parent), "--out", str(site), "--now", AFTER_SEND],
        env={"MAILER_ARCHIVE_URL": ARCHIVE},
    )
    assert result.exit_code != 0
    assert _files(site) == first  # the old site, whole
    assert [p.name for p in tmp_path.iterdir()] == ["docs"]  # no half-built folder left


def test_a_word_processors_line_break_is_a_line_break_and_other_controls_are_named(
    tmp_path: Path,
) -> None:
    """A vertical tab passed check and the dry run, then crashed publish."""
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    item = bulletin / "items" / "03-oslo-process-ten-years.md"
    edit(item, "46 States met in Oslo", "46 States\vmet in Oslo")
    site = tmp_path / "site"
    _publish(bulletin.parent, site, "--now", AFTER_SEND)
    assert "\v" not in (site / "2017-03" / "en.html").read_text()
    edit(item, "Oslo Conference", "Oslo\x01Conference")
    checked = CliRunner().invoke(
        app, ["check", str(bulletin), "--recipients", str(SAMPLE_RECIPIENTS)]
    )
    assert checked.exit_code == 2
    assert "U+0001" in checked.output and "03-oslo-process-ten-years.md" in checked.output


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("banner.html", b"\x89PNG\r\n\x1a\n" + b"<script>alert(1)</script>", "must be a .png"),
        ("banner.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "Outlook for Windows"),
        ("banner.png", b"\xff\xd8\xff\xe0JFIF", "holds JPEG data"),
    ],
)
def test_an_image_whose_name_and_bytes_disagree_is_refused(
    tmp_path: Path, name: str, data: bytes, says: str
) -> None:
    """PNG bytes named banner.html passed check; publish wrote images/banner.html, which
    any web server serves as text/html, script and all."""
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    (bulletin / "images" / name).write_bytes(data)
    edit(
        bulletin / "items" / "01-7msp-save-the-date.md", "images/7msp-banner.png", f"images/{name}"
    )
    checked = CliRunner().invoke(
        app, ["check", str(bulletin), "--recipients", str(SAMPLE_RECIPIENTS)]
    )
    assert checked.exit_code == 2 and says in " ".join(checked.output.split()), checked.output


def test_two_images_with_one_name_are_two_files(tmp_path: Path) -> None:
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    banner = (bulletin / "images" / "7msp-banner.png").read_bytes()
    for folder, extra in (("a", b""), ("b", b"\x00")):
        (bulletin / "images" / folder).mkdir()
        (bulletin / "images" / folder / "photo.png").write_bytes(banner + extra)
    edit(
        bulletin / "items" / "01-7msp-save-the-date.md",
        "images/7msp-banner.png",
        "images/a/photo.png",
    )
    edit(
        bulletin / "items" / "03-oslo-process-ten-years.md",
        "title:",
        "image: images/b/photo.png\nalt: A photograph\ntitle:",
    )
    site = tmp_path / "site"
    _publish(bulletin.parent, site, "--now", AFTER_SEND)
    photos = sorted(p.name for p in (site / "2017-03" / "images").iterdir())
    assert len(photos) == 2 and all(p.endswith("-photo.png") for p in photos)
    page = (site / "2017-03" / "en.html").read_text()
    assert all(f'src="images/{p}"' in page for p in photos)


def test_an_accented_item_name_is_served_and_a_real_send_goes_out(
    served_site: tuple[Path, str], tmp_path: Path
) -> None:
    """`04-séminaire-bangkok.md` was served but the liveness check could not fetch its raw
    non-ASCII URL, so every real send of the issue was refused."""
    root, base = served_site
    bulletins = tmp_path / "bulletins"
    shutil.copytree(SAMPLE, bulletins / "2017-03")
    items = bulletins / "2017-03" / "items"
    (items / "04-bangkok-regional-seminar.md").rename(items / "04-séminaire-bangkok.md")
    _publish(bulletins, root / "bulletin", "--now", AFTER_SEND, env={"MAILER_ARCHIVE_URL": base})
    assert (root / "bulletin" / "2017-03" / "04-séminaire-bangkok.en.ics").is_file()
    with Server() as relay:
        env = {
            **cli_env(relay.port, tmp_path / "ledger"),
            "MAILER_ARCHIVE_URL": base,
            "MAILER_ARCHIVE_WAIT": "0.5",
        }
        recipients = settings_for(relay.port, tmp_path).recipients_dir
        args = ["send", str(bulletins / "2017-03"), "--recipients", str(recipients), "--yes"]
        sent = CliRunner().invoke(app, args, env=env)
        assert sent.exit_code == 0, sent.output
        text = relay.received[0].data.decode("utf-8", "replace")
    assert "04-s%C3%A9minaire-bangkok." in text


def _three_issues(tmp_path: Path) -> Path:
    """2017-03 (4-6 Sept), 2017-06 (moved to 4-8 Sept, deadline extended), 2017-09 (back to
    4-6 Sept, the deadline as it was)."""
    root = _two_issues(tmp_path)
    later = root / "2017-09"
    shutil.copytree(root / "2017-03", later)
    edit(later / "bulletin.yaml", "id: 2017-03", "id: 2017-09")
    edit(later / "bulletin.yaml", "date: 2017-03-27", "date: 2017-09-01")
    edit(
        later / "bulletin.yaml",
        "send_at: 2017-03-28T09:00:00+02:00",
        "send_at: 2017-09-01T09:00:00+02:00",
    )
    moved = root / "2017-06" / "items" / "01-7msp-save-the-date.md"
    edit(moved, "ends: 2017-09-06", "ends: 2017-09-08")
    edit(moved, "deadline: 2017-08-18", "deadline: 2017-08-25")
    return root


def test_sequence_is_a_revision_that_rises_whenever_the_event_changes(tmp_path: Path) -> None:
    """Dates 4-6 Sept → 4-8 → back to 4-6 gave SEQUENCE 0, 1, 1 (distinct versions, not a
    revision: calendars kept 4-8), and the deadline event never carried one."""
    site = tmp_path / "site"
    _publish(_three_issues(tmp_path), site, "--now", "2017-10-01T00:00:00+00:00")
    meetings, deadlines = [], []
    for issue in ("2017-03", "2017-06", "2017-09"):
        raw = (site / issue / "01-7msp-save-the-date.en.ics").read_bytes()
        event, deadline = icalendar.Calendar.from_ical(raw).walk("VEVENT")
        meetings.append(event["SEQUENCE"])
        deadlines.append(deadline["SEQUENCE"])
        parsed = vobject.readOne(raw.decode(), validate=True)  # a second, independent parser
        assert len(parsed.contents["vevent"]) == 2
    assert meetings == [0, 1, 2] and deadlines == [0, 1, 2]


def test_the_feed_id_survives_publishing_an_older_issue(tmp_path: Path) -> None:
    """The feed id held the oldest published issue's date: publishing an older issue
    changed it, and readers saw a new feed (RFC 4287 §4.2.6: it must never change)."""
    root = _two_issues(tmp_path)
    site = tmp_path / "site"
    shutil.move(root / "2017-03", tmp_path / "held-back")
    _publish(root, site, "--now", "2017-07-01T00:00:00+00:00")
    before = feedparser.parse((site / "en" / "feed.atom").read_bytes()).feed.id
    shutil.move(tmp_path / "held-back", root / "2017-03")
    _publish(root, site, "--now", "2017-07-01T00:00:00+00:00")
    after = feedparser.parse((site / "en" / "feed.atom").read_bytes())
    assert after.feed.id == before and len(after.entries) == 2
    settings = {"MAILER_FEED_TAG": "tag:isu-ccm.org,2026:bulletin"}
    _publish(root, site, "--now", "2017-07-01T00:00:00+00:00", env=settings)
    chosen = feedparser.parse((site / "fr" / "feed.atom").read_bytes())
    assert chosen.feed.id == "tag:isu-ccm.org,2026:bulletin/fr"
    assert chosen.entries[0].id == "tag:isu-ccm.org,2026:bulletin/2017-06/fr"


def test_publish_keeps_what_someone_else_put_in_its_site(tmp_path: Path) -> None:
    """A CNAME or a .git added beside a built site was deleted by the next build."""
    site = tmp_path / "docs"
    _publish(SAMPLE.parent, site, "--now", AFTER_SEND)
    (site / "CNAME").write_text("bulletin.example.org\n")
    result = CliRunner().invoke(
        app,
        ["publish", "--bulletins", str(SAMPLE.parent), "--out", str(site), "--now", AFTER_SEND],
        env={"MAILER_ARCHIVE_URL": ARCHIVE},
    )
    assert result.exit_code == 2 and "CNAME" in result.output
    assert (site / "CNAME").read_text() == "bulletin.example.org\n"


def test_publish_through_a_symlink_updates_the_real_site(tmp_path: Path) -> None:
    real = tmp_path / "realsite"
    _publish(SAMPLE.parent, real, "--now", AFTER_SEND)
    (tmp_path / "linksite").symlink_to(real)
    (real / "en" / "index.html").write_text("stale")
    _publish(SAMPLE.parent, tmp_path / "linksite", "--now", AFTER_SEND)
    assert (tmp_path / "linksite").is_symlink()
    assert (real / "en" / "index.html").read_text() != "stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linksite", "realsite"]


def test_a_c1_control_character_is_refused_with_its_line(tmp_path: Path) -> None:
    bulletin = tmp_path / "bulletins" / "2017-03"
    shutil.copytree(SAMPLE, bulletin)
    edit(
        bulletin / "items" / "03-oslo-process-ten-years.md", "Oslo Conference", "Oslo\x9bConference"
    )
    checked = CliRunner().invoke(
        app, ["check", str(bulletin), "--recipients", str(SAMPLE_RECIPIENTS)]
    )
    assert checked.exit_code == 2 and "U+009B" in checked.output


@pytest.mark.system
def test_an_issue_sent_before_its_send_at_says_when_the_archive_carries_it(
    served_site: tuple[Path, str], copy_sample: Sample, tmp_path: Path
) -> None:
    """Plain `mailer publish` leaves an issue out until its send_at: staff sending it
    early (published with --include) are told when the archive carries it by itself."""
    root, base = served_site
    bulletin, recipients = copy_sample()
    edit(
        bulletin / "bulletin.yaml",
        "send_at: 2017-03-28T09:00:00+02:00",
        "send_at: 2099-01-04T09:00:00+01:00",
    )
    _publish(
        bulletin.parent, root / "bulletin", "--include", "2017-03", env={"MAILER_ARCHIVE_URL": base}
    )
    with Server() as relay:
        env = {**cli_env(relay.port, tmp_path / "ledger"), "MAILER_ARCHIVE_URL": base}
        sent = CliRunner().invoke(
            app, ["send", str(bulletin), "--recipients", str(recipients), "--yes"], env=env
        )
    assert sent.exit_code == 0, sent.output
    text = " ".join(sent.output.split())
    assert "This issue is due at 2099-01-04T09:00:00+01:00" in text
    assert "mailer publish --include 2017-03" in text


def test_the_organizations_logo_heads_every_readers_page(tmp_path: Path) -> None:
    from mailer.serve import _Pages

    logo = "https://isu.example.org/logo.png"
    env = {"MAILER_LOGO_URL": logo, "MAILER_FROM": "ISU-CCM <newsletter@isu.example.org>"}
    site = tmp_path / "site"
    _publish(SAMPLE.parent, site, "--now", AFTER_SEND, env=env)
    tag = f'<img class="logo" src="{logo}" alt="ISU-CCM"'
    assert all(tag in page.read_text() for page in site.rglob("*.html"))
    settings = make_settings(logo_url=logo, MAILER_FROM="ISU-CCM <newsletter@isu.example.org>")
    answer = _Pages(settings).answer("done", "fr", 200)
    assert tag in bytes(answer.body).decode()
    assert "img-src https:" in answer.headers["content-security-policy"]  # else never shown
