"""Accessibility, judged by axe-core in Debian's Chromium: every page of the web archive
and every email variant, in light and dark mode, with no horizontal overflow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer import pipeline

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, make_settings, mbox_messages, require_tool
from .helpers import LAUNCH_ARGS, axe_violations, publish_sample, require_axe, with_inline_images

pytestmark = pytest.mark.system  # Chromium with axe-core

# An email is an article inside the reader's mail client: page-level rules do not apply.
EMAIL_ONLY_OFF = {"landmark-one-main": {"enabled": False}, "region": {"enabled": False}}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_tool("chromium")
    require_axe()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    return publish_sample(out, "2017-03-29T00:00:00+00:00")


@pytest.fixture(scope="module")
def emails(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    job = pipeline.prepare(SAMPLE, make_settings(), recipients_dir=SAMPLE_RECIPIENTS)
    result = pipeline.preview(job, tmp_path_factory.mktemp("previews"))
    return [with_inline_images(message) for message in mbox_messages(result.mbox)]


def _violations(page: Any, rules: dict[str, Any] | None = None) -> list[str]:
    return axe_violations(page, rules)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1280])
def test_every_email_variant_passes_axe(
    browser: Any, emails: list[str], scheme: str, width: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    for html in dict.fromkeys(emails):
        page.set_content(html)
        assert _violations(page, EMAIL_ONLY_OFF) == []
        wrapper = page.locator('[role="article"]')
        assert wrapper.get_attribute("aria-roledescription") == "email"
        assert wrapper.get_attribute("aria-label")
    page.close()


def test_pages_and_emails_declare_light_and_dark(site: Path, emails: list[str]) -> None:
    for path in site.rglob("*.html"):
        assert '<meta name="color-scheme" content="light dark">' in path.read_text()
    assert all('<meta name="color-scheme" content="light dark">' in html for html in emails)


def test_axe_flags_a_page_that_fails(browser: Any) -> None:
    page = browser.new_page()
    page.set_content('<html><body><img src="x.png"><a href="#"></a></body></html>')
    found = " ".join(_violations(page))
    assert "image-alt" in found and "html-has-lang" in found
    page.close()


def _endpoint_pages() -> list[tuple[str, str]]:
    """Every page a reader can reach at the unsubscribe endpoint, in every language."""
    from mailer.serve import _Pages

    settings = make_settings(
        MAILER_FROM="ISU-CCM <newsletter@isu.example.org>",
        archive_url="https://bulletin.isu.example.org",
    )
    pages = _Pages(settings)
    found = []
    for language in ("en", "fr", "es"):
        for kind in ("confirm", "done", "test", "invalid"):
            answer = pages.answer(kind, language, 200, "ambassador.moreau@example.org")
            found.append((f"{kind}.{language}", bytes(answer.body).decode()))
    return found


DEFAULT_BLUE = "rgb(0, 0, 238)"  # a link nobody styled


def _reader_pages(site: Path) -> list[tuple[str, str]]:
    """Every page a reader reaches outside the email: the archive's and the endpoint's."""
    archive = [(str(p.relative_to(site)), p.read_text()) for p in sorted(site.rglob("*.html"))]
    assert len(archive) >= 8
    return archive + _endpoint_pages()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1280])
def test_every_page_a_reader_reaches_carries_the_masthead_and_passes_axe(
    browser: Any, site: Path, scheme: str, width: int
) -> None:
    """Archive and endpoint pages in three languages: the organization's masthead, and
    axe-core clean in light and dark, at a phone's and a desktop's width."""
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    for name, html in _reader_pages(site):
        page.set_content(html)
        assert page.locator(".masthead").count() == 1, name
        assert _violations(page) == [], name
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1280])
def test_no_page_scrolls_sideways_or_keeps_a_default_blue_link(
    browser: Any, site: Path, emails: list[str], scheme: str, width: int
) -> None:
    """At a phone's and a desktop's width, in both schemes: no sideways scroll on the
    readers' pages, and no link left in the browser's default blue (the email's "Add to
    calendar" was)."""
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    for name, html in [*_reader_pages(site), *(("email", e) for e in dict.fromkeys(emails))]:
        page.set_content(html)
        if name != "email":
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (name, overflow)
        colours = page.evaluate("[...document.links].map(a => getComputedStyle(a).color)")
        assert DEFAULT_BLUE not in colours, name
    page.close()


def test_the_endpoint_pages_name_the_bulletin_the_address_and_a_person_to_write_to() -> None:
    pages = dict(_endpoint_pages())
    assert "a•••••u@example.org" in pages["confirm.fr"] and "ISU-CCM" in pages["confirm.fr"]
    assert "ambassador.moreau" not in pages["confirm.fr"]
    done = pages["done.es"]
    assert "newsletter@isu.example.org" in done and "por error" in done
    assert "https://bulletin.isu.example.org/es/index.html" in done
    assert 'lang="fr"' in pages["invalid.fr"]  # errors in the reader's language too
