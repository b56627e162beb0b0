"""Who gets which items, in which language, and one message per address."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import pipeline
from mailer.compose import OutgoingMessage
from mailer.errors import ContentError

from .conftest import by_address, edit, html_of, make_settings, parse, text_of
from .helpers import cli_env, send_cli, settings_for
from .smtp_server import Server

NDM_UN_EN = "The CCM President at the 20th NDM-UN meeting"


def test_item_audience_decides_who_gets_it(sample_messages: list[OutgoingMessage]) -> None:
    messages = by_address(sample_messages)
    # Item 02 is for States and international organizations only.
    assert NDM_UN_EN in text_of(messages["disarmament.desk@example.org"])  # states
    assert NDM_UN_EN in html_of(messages["seminar.desk@example.net"])  # int. orgs
    assert NDM_UN_EN not in text_of(messages["research@example.com"])  # civil society
    assert NDM_UN_EN not in html_of(messages["research@example.com"])
    # Items without an audience reach everyone.
    for parsed in messages.values():
        assert "South-East Asia regional seminar" in text_of(parsed)


def test_address_in_two_segments_gets_one_message_with_items_of_both(
    sample_messages: list[OutgoingMessage],
) -> None:
    liaison = [m for m in sample_messages if m.recipient.email.lower() == "liaison@example.org"]
    assert len(liaison) == 1
    assert liaison[0].recipient.segments == ("international-organizations", "civil-society")
    text = text_of(by_address(sample_messages)["liaison@example.org"])
    assert NDM_UN_EN in text  # through international-organizations
    assert "International organizations, Civil society" in text.replace("\r\n", " ")


def test_suppressed_address_is_never_mailed(sample_messages: list[OutgoingMessage]) -> None:
    assert "old.contact@example.org" not in {m.recipient.email for m in sample_messages}
    assert len(sample_messages) == 13


def test_french_reader_gets_french_items_labels_and_dates(
    sample_messages: list[OutgoingMessage],
) -> None:
    parsed = by_address(sample_messages)["ambassador.moreau@example.org"]
    text, html = text_of(parsed), html_of(parsed)
    assert "Septième Assemblée des États parties" in text
    # French typography in labels: a no-break space before the colon, never a plain one.
    assert "Date limite\u00a0: vendredi 18 août 2017" in text
    assert "En savoir plus\u00a0:" in text and "Se désabonner\u00a0:" in text
    assert "Date limite:" not in text and "Lieu:" not in text  # labels only: item text is theirs
    # The venue as the translation names it; English readers keep the English one.
    assert "Lieu\u00a0: Palais des Nations, Genève" in text
    english = text_of(by_address(sample_messages)["disarmament.desk@example.org"])
    assert "Venue: Palais des Nations, Geneva" in english
    assert "En savoir plus" in html and "Read more" not in html
    assert "Dans ce numéro" in html and "27 mars 2017" in html
    assert "Se désabonner" in html
    assert "Le Président de la CCM à la 20e réunion NDM-UN" in html
    assert 'alt="Septième Assemblée des États parties, Genève' in html
    assert '<html lang="fr"' in html


def test_missing_translation_falls_back_to_english_item(
    sample_messages: list[OutgoingMessage],
) -> None:
    parsed = by_address(sample_messages)["ambassador.moreau@example.org"]
    html = html_of(parsed)
    # Item 03 has no French file: English text, marked as English for screen readers.
    assert "Ten years since the Oslo Conference" in html
    assert '<td class="item" lang="en"' in html
    spanish = html_of(by_address(sample_messages)["mision.ginebra@example.com"])
    assert "Reserve la fecha" in spanish and NDM_UN_EN in spanish  # 02 has no Spanish file
    assert "Más información" in spanish and "viernes, 18 de agosto de 2017" in spanish


def test_variants_are_segments_times_language(sample_messages: list[OutgoingMessage]) -> None:
    keys = {(m.variant.segments, m.variant.language) for m in sample_messages}
    assert (("states",), "fr") in keys and (("states",), "es") in keys
    assert (("international-organizations", "civil-society"), "en") in keys
    assert len(keys) == 9


def test_explicit_item_order_in_bulletin_yaml_is_followed(
    copy_sample: Callable[[], tuple[Path, Path]],
) -> None:
    bulletin, recipients = copy_sample()
    yaml = bulletin / "bulletin.yaml"
    yaml.write_text(
        yaml.read_text(encoding="utf-8")
        + "items: [04-bangkok-regional-seminar, 01-7msp-save-the-date]\n",
        encoding="utf-8",
    )
    job = pipeline.prepare(bulletin, make_settings(), recipients_dir=recipients)
    text = text_of(parse(next(iter(job.messages())).data))
    seminar, save_the_date = text.find("South-East Asia regional seminar"), text.find("7e AEP")
    assert 0 < seminar < save_the_date
    assert "Oslo" not in text  # not listed, so not in this issue

    edit(yaml, "04-bangkok", "05-bangkok")
    with pytest.raises(ContentError) as raised:
        pipeline.prepare(bulletin, make_settings(), recipients_dir=recipients)
    assert "no item file items/05-bangkok-regional-seminar.md" in str(raised.value)
    assert "bulletin.yaml, line 19, field 'items'" in str(raised.value)


def test_a_reader_in_two_segments_gets_the_whole_bulletin_with_segment(
    server: Server, tmp_path: Path
) -> None:
    """`--segment civil-society` then `--segment international-organizations`: liaison@
    received only the civil-society variant, then was skipped as already done."""
    env = cli_env(server.port, tmp_path / "ledger")
    recipients = settings_for(server.port, tmp_path).recipients_dir
    for segment in ("civil-society", "international-organizations"):
        result = send_cli(recipients, env, "--segment", segment)
        assert result.exit_code in (0, 1), result.output
    liaison = [r for r in server.received if r.rcpt.lower() == "liaison@example.org"]
    assert len(liaison) == 1
    text = text_of(liaison[0].message())
    # For States and organizations: liaison is in organizations too.
    assert "The CCM President at the 20th NDM-UN meeting" in text
    assert "South-East Asia regional seminar" in text
