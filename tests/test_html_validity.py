"""Valid HTML, judged by the Nu Html Checker (vnu, the W3C's validator, run offline):
every page of the web archive, and every email variant but for what is normal in
HTML email (listed below with the reason for each)."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from mailer import pipeline

from .conftest import (
    ROOT,
    SAMPLE,
    SAMPLE_RECIPIENTS,
    html_of,
    make_settings,
    mbox_messages,
    require_tool,
)
from .helpers import publish_sample

VNU = Path(
    os.environ.get(
        "MAILER_VNU",
        ROOT / ".ci" / "tools" / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar",
    )
)

pytestmark = pytest.mark.system  # the Nu Html Checker (Java)
# What HTML email needs and the checker, built for web pages, calls an error:
EMAIL_NORMAL = {
    # Apple Mail's switch against reformatting takes no content (Apple's documentation).
    "Element “meta” is missing one or more of the following attributes: “content”, “property”.",
    # The older spelling of color-scheme, still read by Apple Mail for dark mode.
    "CSS: “supported-color-schemes”: Property “supported-color-schemes” doesn't exist.",
    # Outlook for Windows' own property, which hides the preheader there.
    "CSS: “mso-hide”: Property “mso-hide” doesn't exist.",
}


def _errors(files: list[Path]) -> Counter[str]:
    java = require_tool("java")
    if not VNU.exists():
        if os.environ.get("MAILER_REQUIRE_EXTERNAL") == "1":
            pytest.fail(f"the Nu Html Checker is required but {VNU} is missing (run .ci/run)")
        pytest.skip("the Nu Html Checker (npm vnu-jar) is not installed")
    done = subprocess.run(
        [java, "-jar", str(VNU), "--errors-only", "--format", "json", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = json.loads(done.stderr or done.stdout)
    return Counter(m["message"] for m in found["messages"] if m.get("type") == "error")


def test_every_archive_page_is_valid_html(tmp_path: Path) -> None:
    site = publish_sample(
        tmp_path / "site",
        "2017-04-01T00:00:00+00:00",
        env={
            "MAILER_ARCHIVE_URL": "https://isu.example.org/bulletin",
            "MAILER_FROM": "ISU <i@isu.example.org>",
        },
    )
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 8  # the languages page, 3 indexes, a chooser and 3 issue pages
    assert _errors(pages) == Counter()


def test_every_email_variant_is_valid_html_but_for_what_email_needs(tmp_path: Path) -> None:
    settings = make_settings(archive_url="https://isu.example.org/bulletin")
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=SAMPLE_RECIPIENTS)
    messages = mbox_messages(pipeline.preview(job, tmp_path / "preview").mbox)
    files = []
    for number, message in enumerate(messages):
        path = tmp_path / f"email-{number:02d}.html"
        path.write_text(html_of(message), encoding="utf-8")
        files.append(path)
    errors = _errors(files)
    assert set(errors) <= EMAIL_NORMAL, [e for e in errors if e not in EMAIL_NORMAL]
