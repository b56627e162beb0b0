"""Headless Chromium (an external judge) renders every variant on a phone and a desktop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import mbox_messages, require_tool
from .helpers import LAUNCH_ARGS, with_inline_images

pytestmark = pytest.mark.system  # Chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_tool("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.mark.parametrize("width", [375, 600])
def test_every_variant_fits_the_screen_with_alt_text(
    browser: Any, dry_run_files: tuple[Path, Path], tmp_path: Path, width: int
) -> None:
    mbox, _ = dry_run_files
    messages = mbox_messages(mbox)
    page = browser.new_page(viewport={"width": width, "height": 800})
    for index, message in enumerate(messages):
        page.set_content(with_inline_images(message))
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert scroll <= inner, f"{message['To']} overflows at {width}px: {scroll} > {inner}"
        alts = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.naturalWidth])")
        assert alts and all(alt and natural > 0 for alt, natural in alts)
        shot = tmp_path / f"message-{index}-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    assert len(messages) == 13  # every message, so every variant
    page.close()


def test_preview_page_renders_every_variant(
    browser: Any, dry_run_files: tuple[Path, Path], tmp_path: Path
) -> None:
    _, preview = dry_run_files
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(preview.as_uri())
    frames = [f for f in page.frames if f != page.main_frame]
    assert len(frames) == 9
    for frame in frames:
        assert frame.evaluate("document.documentElement.lang") in ("en", "fr", "es")
        assert frame.evaluate("document.images.length") >= 1
        assert frame.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(tmp_path / "preview.png"))
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    page.close()
