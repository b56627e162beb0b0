"""The bytes of each message meet the contract's "Message standards"."""

from __future__ import annotations

import re

from mailer import pipeline, verp
from mailer.bulletin import image_file_name
from mailer.compose import OutgoingMessage
from mailer.unsubscribe import read_token

from .conftest import (
    SAMPLE,
    SAMPLE_RECIPIENTS,
    SEND_SETTINGS,
    UNSUBSCRIBE_SECRET,
    by_address,
    compose_sample,
    html_of,
    make_settings,
    parse,
    text_of,
)

REQUIRED = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Reply-To", "List-Id")


def test_every_message_is_multipart_alternative_with_text_first(
    sample_messages: list[OutgoingMessage],
) -> None:
    for message in sample_messages:
        parsed = parse(message.data)
        assert parsed.get_content_type() == "multipart/alternative"
        parts = list(parsed.iter_parts())
        assert parts[0].get_content_type() == "text/plain"
        assert parts[1].get_content_type() in ("text/html", "multipart/related")
        for leaf in parsed.walk():
            if leaf.get_content_maintype() == "text":
                assert leaf.get_content_charset() == "utf-8"
        assert not parsed.defects, parsed.defects


def test_all_contract_headers_are_present_once(sample_messages: list[OutgoingMessage]) -> None:
    for message in sample_messages:
        parsed = parse(message.data)
        for name in (*REQUIRED, "List-Unsubscribe", "List-Unsubscribe-Post"):
            assert len(parsed.get_all(name) or []) == 1, name
        assert parsed["MIME-Version"] == "1.0"
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_lines_respect_rfc5322_limits_and_crlf(sample_messages: list[OutgoingMessage]) -> None:
    for message in sample_messages:
        assert b"\n" not in message.data.replace(b"\r\n", b"")
        head, _, body = message.data.partition(b"\r\n\r\n")
        for line in body.split(b"\r\n"):
            assert len(line) <= 76 and line.isascii(), line
        for line in head.split(b"\r\n"):
            assert line.isascii() and len(line) <= 998
            # Over 78 only when a single unbreakable token (a URL) cannot be folded.
            assert len(line) <= 78 or b" " not in line.strip(), line


def test_message_id_is_deterministic_per_issue_and_recipient_at_sender_domain(
    sample_messages: list[OutgoingMessage],
) -> None:
    again = {m.recipient.email: m.message_id for m in compose_sample(**SEND_SETTINGS)}
    # Keyed with a secret: another key (another deployment, a forger) gives other ids.
    other = compose_sample(**{**SEND_SETTINGS, "unsubscribe_secret": "another key"})
    assert not {m.message_id for m in other} & set(again.values())
    ids = set()
    for message in sample_messages:
        parsed = parse(message.data)
        assert parsed["Message-ID"] == message.message_id == again[message.recipient.email]
        assert re.fullmatch(r"<2017-03\.[0-9a-f]{24}@isu\.example\.org>", message.message_id)
        ids.add(message.message_id)
    assert len(ids) == len(sample_messages)


def test_to_header_encodes_non_ascii_display_names(sample_messages: list[OutgoingMessage]) -> None:
    messages = by_address(sample_messages)
    chile = messages["mision.ginebra@example.com"]
    assert chile["To"].addresses[0].display_name == "Ana Lucía Pérez"
    assert chile["To"].addresses[0].addr_spec == "mision.ginebra@example.com"
    raw = next(m.data for m in sample_messages if m.recipient.email == "mision.ginebra@example.com")
    assert b"To: =?utf-8?" in raw


def test_subject_and_labels_follow_the_readers_language(
    sample_messages: list[OutgoingMessage],
) -> None:
    messages = by_address(sample_messages)
    assert messages["ambassador.moreau@example.org"]["Subject"].startswith("Lettre de la CCM")
    assert messages["mision.ginebra@example.com"]["Subject"].startswith("Boletín de la CMR")
    assert messages["disarmament.desk@example.org"]["Subject"].startswith("CCM newsletter")


def test_list_headers_name_the_list_and_the_unsubscribe_targets(
    sample_messages: list[OutgoingMessage],
) -> None:
    parsed = by_address(sample_messages)["research@example.com"]
    # The display name is the list's stable name (MAILER_FROM's), never the issue's title:
    # filters and list headers key on it, and a month in it made every issue a new list.
    assert str(parsed["List-Id"]) == "ISU-CCM <bulletin.isu.example.org>"
    footer = text_of(parsed)
    assert "You receive this bulletin from ISU-CCM as a contact on its mailing list" in (
        " ".join(footer.split())
    )
    assert "March 2017 as a contact" not in " ".join(footer.split())
    named = make_settings(**SEND_SETTINGS, list_name="CCM Newsletter")
    job = pipeline.prepare(SAMPLE, named, recipients_dir=SAMPLE_RECIPIENTS)
    first = parse(next(job.messages()).data)
    assert str(first["List-Id"]) == "CCM Newsletter <bulletin.isu.example.org>"
    targets = re.findall(r"<([^>]+)>", str(parsed["List-Unsubscribe"]))
    # The reader's own keyed subaddress: the proof of who asks, since mail clients blank
    # or drop a mailto's subject.
    key = verp.id_key(make_settings(**SEND_SETTINGS))
    assert key is not None
    reader_tag = verp.tag(key, "2017-03", "research@example.com")
    assert targets[0] == f"mailto:unsubscribe+2017-03.{reader_tag}@isu.example.org"
    url = targets[1]
    assert url.startswith("https://isu.example.org/unsubscribe?token=")
    token = url.split("token=")[1].split("&")[0]
    assert read_token(UNSUBSCRIBE_SECRET.encode(), token).address == "research@example.com"
    assert parsed["Reply-To"] == "ISU-CCM <isu@example.org>"


def test_html_is_a_lang_tagged_table_layout_with_hidden_preheader(
    sample_messages: list[OutgoingMessage],
) -> None:
    for message in sample_messages:
        body = html_of(parse(message.data))
        assert f'<html lang="{message.recipient.language}"' in body
        assert 'role="presentation"' in body
        preheader = re.search(r'<div class="preheader" style="([^"]+)"', body)
        assert preheader and "display:none" in preheader.group(1)
        assert "font-size:0" in preheader.group(1) and "color" not in preheader.group(1)
        title_tag = body.split('class="item-title"')[1][:30]
        assert re.match(r"\s*style=['\"]margin:", title_tag)  # CSS inlined


def test_html_links_are_absolute_and_images_have_alt(
    sample_messages: list[OutgoingMessage],
) -> None:
    for message in sample_messages:
        body = html_of(parse(message.data))
        for href in re.findall(r'href="([^"]*)"', body):
            assert href.startswith(("https://", "http://", "mailto:")), href
        for tag in re.findall(r"<img[^>]*>", body):
            assert re.search(r'alt="[^"]+"', tag), tag


def test_html_stays_under_gmail_clipping_size(sample_messages: list[OutgoingMessage]) -> None:
    for message in sample_messages:
        assert len(html_of(parse(message.data)).encode()) < 102 * 1024
        assert len(message.data) < 102 * 1024


def test_images_are_embedded_without_archive_and_linked_with_it(
    sample_messages: list[OutgoingMessage],
) -> None:
    parsed = by_address(sample_messages)["disarmament.desk@example.org"]
    related = [p for p in parsed.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    image = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html_of(parsed)
    assert image.get_content()[:8] == b"\x89PNG\r\n\x1a\n"

    archived = compose_sample(archive_url="https://isu.example.org/archive")
    linked = parse(next(m.data for m in archived if m.recipient.language == "en"))
    assert not [p for p in linked.walk() if p.get_content_maintype() == "image"]
    body = html_of(linked)
    banner = image_file_name(SAMPLE / "images" / "7msp-banner.png")
    assert banner.endswith("-7msp-banner.png") and len(banner) == 13 + len("7msp-banner.png")
    assert f'src="https://isu.example.org/archive/2017-03/images/{banner}"' in body
    assert 'href="https://isu.example.org/archive/2017-03/en.html"' in body  # its language


def test_plain_text_is_readable_wrapped_and_free_of_markup(
    sample_messages: list[OutgoingMessage],
) -> None:
    for message in sample_messages:
        text = text_of(parse(message.data)).replace("\r\n", "\n")
        for line in text.splitlines():
            assert len(line) <= 78 or (" " not in line.strip()), line
        assert "**" not in text and "](" not in text and "<p>" not in text and "&amp;" not in text
    english = text_of(by_address(sample_messages)["disarmament.desk@example.org"])
    english = english.replace("\r\n", "\n")
    assert "ccm@unog.ch" in english
    assert "Read more:\nhttps://www.unog.ch/" in english
    # International dates (en_GB), as the secretariat's text writes them.
    assert "Deadline: Friday, 18 August 2017" in english and "27 March 2017" in english
    assert "August 18" not in english and "March 27" not in english


def test_the_inliner_keeps_the_templates_own_attributes(
    sample_messages: list[OutgoingMessage],
) -> None:
    """premailer turned width="552" into width="100%", added height="auto" and put bgcolor
    on links: 13 + 13 + 35 Nu Html Checker errors on the sample's 13 messages."""
    html = html_of(by_address(sample_messages)["research@example.com"])
    image = re.search(r"<img [^>]*item-image[^>]*>", html)
    assert image is not None and 'width="552"' in image.group(0)
    assert 'height="auto"' not in html and 'width="100%"' not in image.group(0)
    assert not re.search(r"<a [^>]*bgcolor", html)


def test_each_languages_dates_follow_the_locale_staff_chose() -> None:
    """MAILER_LOCALES: a secretariat that writes American English dates can say so."""
    settings = make_settings(locales="en=en_US, fr=fr_CH")
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=SAMPLE_RECIPIENTS)
    english = text_of(by_address(list(job.messages()))["disarmament.desk@example.org"])
    assert "Deadline: Friday, August 18, 2017" in english
