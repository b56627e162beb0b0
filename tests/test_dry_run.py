"""The dry run writes the messages a send would submit, and a page to review them."""

from __future__ import annotations

import html
import itertools
import mailbox
import re
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from typer.testing import CliRunner

from mailer import compose as compose_module
from mailer import pipeline
from mailer.cli import app
from mailer.recipients import Recipient

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, make_settings, mbox_messages


def test_mbox_holds_exactly_the_messages_a_send_would_submit(
    dry_run_files: tuple[Path, Path],
) -> None:
    mbox, _ = dry_run_files
    job = pipeline.prepare(SAMPLE, make_settings(), recipients_dir=SAMPLE_RECIPIENTS)
    box = mailbox.mbox(str(mbox))
    stored = [box.get_bytes(key) for key in box.iterkeys()]
    composed = [m.data.replace(b"\r\n", b"\n") for m in job.messages()]
    assert len(stored) == len(composed) == 13

    def without_date(data: bytes) -> bytes:
        return re.sub(rb"\nDate: [^\n]+", b"", data).rstrip(b"\n")

    assert [without_date(s) for s in stored] == [without_date(c) for c in composed]


def test_preview_page_shows_every_variant_and_every_recipient(
    dry_run_files: tuple[Path, Path],
) -> None:
    mbox, page = dry_run_files
    text = page.read_text(encoding="utf-8")
    messages = mbox_messages(mbox)
    assert text.count('<section id="variant-') == 9
    assert text.count("<iframe ") == 9 and text.count("<pre>") == 9
    # A bulletin's HTML runs no script inside the preview page.
    assert text.count('<iframe sandbox="allow-same-origin allow-popups" ') == 9
    for message in messages:
        address = message["To"].addresses[0].addr_spec
        assert f"<td>{html.escape(address)}</td>" in text
    # Self-contained: images are inlined as data: URLs, nothing refers to cid: or the network.
    assert "cid:" not in text and "data:image/png;base64," in text
    assert "<script" not in text and 'src="http' not in text
    assert "placeholder sender" in text


def test_dry_run_command_prints_both_paths_and_needs_no_settings(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "send",
            str(SAMPLE),
            "--dry-run",
            "--recipients",
            str(SAMPLE_RECIPIENTS),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-2:] == [str(out / "2017-03.mbox"), str(out / "2017-03.html")]
    assert "placeholder" in result.output


def test_segment_and_limit_narrow_the_dry_run(tmp_path: Path) -> None:
    args = ["send", str(SAMPLE), "--dry-run", "--recipients", str(SAMPLE_RECIPIENTS)]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--segment", "civil-society"])
    assert result.exit_code == 0, result.output
    messages = mbox_messages(tmp_path / "a" / "2017-03.mbox")
    assert len(messages) == 5
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--limit", "3"])
    assert len(mbox_messages(tmp_path / "b" / "2017-03.mbox")) == 3


def test_check_validates_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["check", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS)])
    assert result.exit_code == 0, result.output
    assert "2017-03: OK. 4 items, 13 recipients, 9 variants" in result.output
    assert "MAILER_FROM is not set" in result.output
    assert list(tmp_path.iterdir()) == []


def _many(count: int, pulled: list[int]) -> Iterator[Recipient]:
    for index in range(count):
        pulled[0] += 1
        yield Recipient(
            email=f"reader{index}@example.org",
            name=f"Reader {index}",
            organization="",
            country="",
            language=("en", "fr", "es")[index % 3],
            segments=(("states",), ("civil-society",))[index % 2],
            fields=MappingProxyType({}),
        )


def test_messages_are_produced_lazily_and_each_variant_inlined_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    original = compose_module._inline_css

    def counting(html_source: str) -> str:
        calls.append(1)
        return original(html_source)

    monkeypatch.setattr(compose_module, "_inline_css", counting)
    job = pipeline.prepare(SAMPLE, make_settings(), recipients_dir=SAMPLE_RECIPIENTS)
    pulled = [0]
    stream = job.composer.stream(_many(100_000, pulled))
    first = list(itertools.islice(stream, 10))
    assert len(first) == 10 and pulled[0] == 10  # nothing composed ahead of the consumer
    rest = sum(1 for _ in itertools.islice(stream, 1990))
    assert rest == 1990 and pulled[0] == 2000
    assert len(calls) == 6  # 2 segment sets x 3 languages, premailer once each


def test_preview_page_tells_each_variants_subject_preheader_and_items(
    dry_run_files: tuple[Path, Path],
) -> None:
    _, page = dry_run_files
    text = html.unescape(page.read_text(encoding="utf-8"))
    civil_society_fr = text.split("civil-society · fr")[1].split("<section")[0]
    assert "Subject: Lettre de la CCM : 7e Assemblée des États parties" in civil_society_fr
    assert "Preheader: Inscriptions jusqu’au 18 août." in civil_society_fr
    assert "Items: À vos agendas" in civil_society_fr
    items = civil_society_fr.split("Items: ")[1].split("<br>")[0]
    assert "Oslo" in items and "NDM-UN" not in items  # item 02 is not for civil society
