"""Per-recipient substitution gives the same message as building it the slow way."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from collections.abc import Callable
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from types import MappingProxyType

import pytest

from mailer import pipeline
from mailer.compose import Composer, OutgoingMessage
from mailer.errors import ContentError
from mailer.recipients import Recipient
from mailer.unsubscribe import make_token

from .conftest import (
    ROOT,
    SAMPLE,
    SAMPLE_RECIPIENTS,
    UNSUBSCRIBE_SECRET,
    by_address,
    edit,
    html_of,
    make_settings,
    parse,
    text_of,
)


def _composer(**settings: object) -> Composer:
    job = pipeline.prepare(
        SAMPLE,
        make_settings(MAILER_FROM="ISU-CCM <newsletter@isu.example.org>", **settings),
        recipients_dir=SAMPLE_RECIPIENTS,
    )
    return job.composer


def _recipient(name: str, language: str = "en", email: str = "reader@example.org") -> Recipient:
    return Recipient(
        email=email,
        name=name,
        organization="Org",
        country="",
        language=language,
        segments=("states", "civil-society"),
        fields=MappingProxyType({}),
    )


def _slow_way(composer: Composer, recipient: Recipient) -> EmailMessage:
    """The reference: a fresh EmailMessage per recipient, as mailmerge builds it."""
    message = composer.compose(recipient)
    variant = composer.variant(message.variant)
    values = variant.personal_values(recipient, composer.identity, composer.bulletin.id)
    slow = EmailMessage()
    slow["From"] = Address("ISU-CCM", addr_spec="newsletter@isu.example.org")
    slow["To"] = Address(recipient.name, addr_spec=recipient.email)
    slow["Subject"] = variant.subject
    slow["Message-ID"] = message.message_id
    slow.set_content(variant.personal_text(values))
    slow.add_alternative(variant.personal_html(values), subtype="html")
    return slow


def _rfc2047(data: bytes, name: str) -> str:
    """A header decoded per RFC 2047, whitespace between encoded words dropped.

    The modern parser keeps that whitespace inside display names, and the two
    builders fold long names at different places, so compare the RFC's decoding.
    """
    raw = str(email.message_from_bytes(data, policy=email.policy.compat32)[name])
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", raw).strip()
    return str(make_header(decode_header(unfolded)))


NAMES = [
    "Ana Lucía Pérez",
    "Jean-Baptiste Kaboré",
    'Smith, John (Acting Director) = "JD"',
    "From Here",
    "Ð" * 120,
    "",
    "A" * 150 + " = B",
    "Ngô Thị Thu Hà & <Partners>",
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_fast_message_parses_back_like_one_built_the_slow_way(name: str, language: str) -> None:
    composer = _composer(unsubscribe_url="https://isu.example.org/u")
    recipient = _recipient(name, language)
    fast_bytes = composer.compose(recipient).data
    slow_bytes = _slow_way(composer, recipient).as_bytes()
    fast, slow = parse(fast_bytes), parse(slow_bytes)
    for header in ("From", "To", "Subject", "Message-ID"):
        assert _rfc2047(fast_bytes, header) == _rfc2047(slow_bytes, header), header
    fast_text, slow_text = text_of(fast).replace("\r\n", "\n"), text_of(slow)
    assert fast_text.rstrip("\n") == slow_text.rstrip("\n")
    assert html_of(fast).replace("\r\n", "\n").rstrip("\n") == html_of(slow).rstrip("\n")


def test_greeting_names_the_reader_in_their_language(
    sample_messages: list[OutgoingMessage],
) -> None:
    messages = by_address(sample_messages)
    assert "Bonjour Claire Moreau," in text_of(messages["ambassador.moreau@example.org"])
    assert "Estimado/a Ana Lucía Pérez:" in html_of(messages["mision.ginebra@example.com"])
    assert "Dear Kwame Mensah," in text_of(messages["geneva.mission@example.net"])
    nameless = messages["survivors@example.com"]
    assert "Dear colleague," in text_of(nameless) and "Dear colleague," in html_of(nameless)


def test_unsubscribe_link_is_the_readers_own(sample_messages: list[OutgoingMessage]) -> None:
    for message in sample_messages:
        parsed = parse(message.data)
        token = make_token(UNSUBSCRIBE_SECRET.encode(), message.recipient.email, "2017-03")
        own = f"https://isu.example.org/unsubscribe?token={token}&lang="
        assert own in text_of(parsed)
        assert own.replace("&", "&amp;") in html_of(parsed)
        assert own in str(parsed["List-Unsubscribe"])


def test_names_with_markup_are_escaped_in_html() -> None:
    composer = _composer()
    parsed = parse(composer.compose(_recipient("<b>Bold</b> & Co")).data)
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; Co" in html_of(parsed)
    assert "<b>Bold</b> & Co" in text_of(parsed)


def test_a_crafted_name_cannot_add_a_header() -> None:
    composer = _composer()
    with pytest.raises(ContentError) as raised:
        composer.compose(_recipient("Eve\r\nBcc: x@example.com"))
    assert "line break" in str(raised.value)
    # Whatever else is built, no message ever carries a Bcc header.
    message = parse(composer.compose(_recipient("Eve Bcc: x@example.com")).data)
    assert message["Bcc"] is None
    assert message["To"].addresses[0].display_name == "Eve Bcc: x@example.com"


def test_extra_csv_columns_reach_templates_as_fields(
    copy_sample: Callable[[], tuple[Path, Path]], tmp_path: Path
) -> None:
    bulletin, recipients = copy_sample()
    (recipients / "states.csv").write_text(
        "email,name,language,title,mission\n"
        "x@example.org,Ana Pérez,es,Embajadora,Misión de Chile & Co\n",
        encoding="utf-8",
    )
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "mailer" / "templates", templates)
    text = templates / "bulletin.txt.j2"
    edit(
        text,
        "{{ recipient.greeting }}",
        "{{ recipient.greeting }}\n{{ recipient.title }}, {{ recipient.mission }}",
    )
    html = templates / "bulletin.html.j2"
    edit(
        html,
        "{{ recipient.greeting }}</p>",
        "{{ recipient.greeting }}</p><p>{{ recipient.mission }}</p>",
    )
    settings = make_settings(templates_dir=templates)
    job = pipeline.prepare(bulletin, settings, recipients_dir=recipients, segments=["states"])
    message = parse(next(iter(job.messages())).data)
    assert "Embajadora, Misión de Chile & Co" in text_of(message)
    assert "<p>Misión de Chile &amp; Co</p>" in html_of(message)
