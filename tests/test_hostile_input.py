"""Hostile and messy input: a clear located error (exit 2) or correct handling, never a
traceback, a hang, or mail that goes wrong."""

from __future__ import annotations

import shutil
import time
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer import pipeline
from mailer.cli import app
from mailer.compose import Identity
from mailer.errors import ConfigError, LedgerGone

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, edit, make_settings
from .helpers import FAST, Sample, cli_env, settings_for, write_list
from .smtp_server import Behaviour, Server

ITEM = "items/01-7msp-save-the-date.md"
BOMB = (
    'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]\n"
        for i in range(8)
    )
    + "title: *i\n"
)


def _check(bulletin: Path, recipients: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check", str(bulletin), "--recipients", str(recipients)])
    return result.exit_code, result.output


@pytest.mark.parametrize("where", ["bulletin.yaml", ITEM])
def test_a_yaml_alias_bomb_is_refused_at_once_with_a_short_message(
    copy_sample: Sample, where: str
) -> None:
    bulletin, recipients = copy_sample()
    path = bulletin / where
    if where == "bulletin.yaml":
        path.write_text(path.read_text().replace("title: Convention", BOMB + "# Convention"))
    else:
        path.write_text(path.read_text().replace('title: "Save', BOMB + '# "Save', 1))
    started = time.monotonic()
    code, output = _check(bulletin, recipients)
    assert time.monotonic() - started < 10
    assert code == 2 and "anchors and aliases" in output and "line " in output
    assert len(output) < 600, output


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (ITEM, "starts: 2017-09-04", "starts: 2017-02-30", ("line 3", "2017-02-30", "must exist")),
        ("bulletin.yaml", "date: 2017-03-27", "date: 2017-13-01", ("line 3", "2017-13-01")),
        (ITEM, "link: https://www.unog.ch/", "link: " + "x" * 5000, ("not an absolute link",)),
        (ITEM, "States Parties", "MAILERSLOT0Z States Parties", ("MAILERSLOT0Z", "internally")),
        ("bulletin.yaml", "id: 2017-03", "id: 2017-02", ("field 'id'", "copied")),
    ],
)
def test_wrong_content_gets_one_located_paragraph(
    copy_sample: Sample, file: str, old: str, new: str, expected: tuple[str, ...]
) -> None:
    bulletin, recipients = copy_sample()
    edit(bulletin / file, old, new)
    code, output = _check(bulletin, recipients)
    assert code == 2, output
    assert "Traceback" not in output and len(output) < 800, output
    for fragment in expected:
        assert fragment in output, output


def test_an_image_that_is_not_an_image_is_refused(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    (bulletin / "images" / "7msp-banner.png").write_bytes(b"%PDF-1.4 not an image\n")
    code, output = _check(bulletin, recipients)
    assert code == 2 and "is named .png but holds not an image at all" in output, output


def test_a_byte_order_mark_in_an_item_file_is_accepted(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    path = bulletin / ITEM
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, output = _check(bulletin, recipients)
    assert code == 0, output


def test_impossible_date_in_one_bulletin_does_not_stop_dispatch_of_another(
    tmp_path: Path,
) -> None:
    root = tmp_path / "bulletins"
    shutil.copytree(SAMPLE, root / "2017-03")
    shutil.copytree(SAMPLE, root / "2017-06")
    edit(root / "2017-06" / "bulletin.yaml", "id: 2017-03", "id: 2017-06")
    edit(root / "2017-06" / ITEM, "starts: 2017-09-04", "starts: 2017-02-30")
    result = CliRunner().invoke(
        app,
        [
            "dispatch",
            "--bulletins",
            str(root),
            "--now",
            "2017-03-28T10:00:00+02:00",
            "--dry-run",
            "--recipients",
            str(SAMPLE_RECIPIENTS),
        ],
        env={"MAILER_PREVIEW_DIR": str(tmp_path / "previews")},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "would send" in result.output and "invalid" in result.output, result.output
    assert (tmp_path / "previews" / "2017-03.mbox").exists()


# -- spreadsheet exports ---------------------------------------------------------------------

HEADER = "email,name,organization,country,language"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Excel's "CSV UTF-8": a byte-order mark; and empty trailing rows.
        (b"\xef\xbb\xbf" + HEADER.encode() + b"\na@example.org,Ann,,,en\n,,,,\n,,,,\n", 1),
        # A French-locale export: semicolons.
        (b"email;name;organization;country;language\na@example.org;Ann;Org, Inc.;;fr\n", 1),
        # Column names in another case, with spaces.
        (b"Email , NAME,Language\na@example.org,Ann,es\nb@example.org,Bob,en\n", 2),
        # Excel's empty trailing columns.
        (HEADER.encode() + b",,\na@example.org,Ann,,,en,,\n", 1),
    ],
)
def test_spreadsheet_exports_are_read_correctly(
    copy_sample: Sample, data: bytes, expected: int
) -> None:
    bulletin, recipients = copy_sample()
    (recipients / "states.csv").write_bytes(data)
    settings = make_settings()
    job = pipeline.prepare(bulletin, settings, recipients_dir=recipients, segments=["states"])
    people = list(job.recipients)
    assert len(people) == expected
    assert people[0].email == "a@example.org" and people[0].name == "Ann"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00binary workbook", ("Excel workbook", "CSV UTF-8")),
        ((HEADER + "\nj@example.org,Jos\xe9,,,fr\n").encode("latin-1"), ("not UTF-8", "line 2")),
        (b"email,name,Email\na@example.org,Ann,b@example.org\n", ("appears twice", "line 1")),
        (b"mail,name\na@example.org,Ann\n", ("no 'email' column",)),
        (HEADER.encode() + b"\na@example.org,Ann,Org, Inc.,France,en\n", ("line 2", "quotes")),
    ],
)
def test_broken_spreadsheet_exports_are_refused_with_the_reason(
    copy_sample: Sample, data: bytes, expected: tuple[str, ...]
) -> None:
    bulletin, recipients = copy_sample()
    (recipients / "states.csv").write_bytes(data)
    code, output = _check(bulletin, recipients)
    assert code == 2 and "Traceback" not in output, output
    assert "states.csv" in output
    for fragment in expected:
        assert fragment in output, output


def test_an_overlong_display_name_is_refused_and_long_ones_fold(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    (recipients / "states.csv").write_text(f"{HEADER}\na@example.org,{'N' * 999},,,en\n")
    code, output = _check(bulletin, recipients)
    assert code == 2 and "field 'name'" in output and "at most 200" in output, output
    (recipients / "states.csv").write_text(f"{HEADER}\na@example.org,{'Ñandú ' * 33},,,es\n")
    job = pipeline.prepare(bulletin, make_settings(), recipients_dir=recipients)
    message = next(m for m in job.messages() if m.recipient.email == "a@example.org")
    assert max(len(line) for line in message.data.split(b"\r\n")) <= 998
    raw_to = message.data.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0]
    assert b"=?utf-8?" in raw_to
    encoded = message.data.split(b"\r\nTo: ", 1)[1].split(b" <a@example.org>", 1)[0]
    name = str(make_header(decode_header(encoded.decode("ascii").replace("\r\n", ""))))
    assert name == ("Ñandú " * 33).strip()  # as RFC 2047 mail clients decode it


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILER_FROM", "ISU <not an address>"),
        ("MAILER_FROM", "isu@example.org>, evil@example.com"),
        ("MAILER_REPLY_TO", "a@b@example.org"),
        ("MAILER_LIST_ID", "<not a list id>"),
        ("MAILER_LIST_ID", "nodots"),
    ],
)
def test_malformed_sender_settings_are_refused(name: str, value: str) -> None:
    result = CliRunner().invoke(app, ["check", str(SAMPLE)], env={name: value})
    assert result.exit_code == 2 and name in result.output, result.output


def test_a_bounce_address_without_a_key_refuses_a_real_send() -> None:
    settings = make_settings(
        MAILER_FROM="a@isu.example.org",
        unsubscribe_mailto="u@isu.example.org",
        bounce_address="bounces@isu.example.org",
    )
    with pytest.raises(ConfigError) as raised:
        Identity.from_settings(settings, dry_run=False)
    assert raised.value.field == "MAILER_BOUNCE_SECRET"


# -- the ledger under attack -------------------------------------------------------------------


def test_a_ledger_deleted_during_the_send_stops_it_at_once(tmp_path: Path) -> None:
    recipients = write_list(tmp_path / "recipients", 80)
    with Server(Behaviour(delay=0.01)) as server:
        settings = settings_for(server.port, tmp_path, recipients_dir=recipients)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        ledger_file = settings.ledger_dir / "2017-03.jsonl"

        def delete_after_five(outcome: str, message: object) -> None:
            if len(server.received) >= 5 and ledger_file.exists():
                ledger_file.unlink()

        with (
            pytest.raises(LedgerGone) as raised,
            pipeline.open_ledger(job, settings) as ledger,
        ):
            pipeline.deliver(
                job, settings, ledger, ledger.state(), policy=FAST, progress=delete_after_five
            )
    assert "deleted or replaced" in str(raised.value)
    assert len(server.received) <= 6 + 2 * settings.max_connections


def test_a_damaged_ledger_line_is_named_not_a_traceback(tmp_path: Path) -> None:
    with Server() as server:
        env = cli_env(server.port, tmp_path / "ledger")
        args = ["send", str(SAMPLE), "--recipients", str(write_list(tmp_path / "r", 5)), "--yes"]
        assert CliRunner().invoke(app, args, env=env).exit_code == 0
        ledger = tmp_path / "ledger" / "2017-03.jsonl"
        lines = ledger.read_text().splitlines(keepends=True)
        lines.insert(3, "<<<<<<< HEAD\n")
        ledger.write_text("".join(lines))
        again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 2 and "line 4" in again.output and "merge" in again.output
    assert len(server.received) == 5


def test_a_ledger_line_with_an_unknown_outcome_is_named_not_counted(tmp_path: Path) -> None:
    """Outcomes are a closed set: a hand edit's "sendt" was read as a state nobody knew
    and the reader counted as pending, to be mailed again."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    line = (
        '{"time": "2017-03-28T07:30:00.000+00:00", "recipient": "reader0@example.org", '
        '"outcome": "%s", "attempt": 1, "code": 250, "reply": "ok", "message_id": "<m@x>", '
        '"segments": ["states"]}\n'
    )
    (ledger / "2017-03.jsonl").write_text(line % "attempt" + line % "sendt")
    recipients = write_list(tmp_path / "r", 3)
    result = CliRunner().invoke(
        app,
        ["status", str(SAMPLE), "--recipients", str(recipients)],
        env={"MAILER_LEDGER_DIR": str(ledger)},
    )
    assert result.exit_code == 2 and "line 2" in result.output, result.output


# -- the way back ------------------------------------------------------------------------------


def test_unsubscribing_an_unmailable_address_writes_nothing_that_blocks_sends(
    copy_sample: Sample,
) -> None:
    bulletin, recipients = copy_sample()
    before = (recipients / "suppressions.csv").read_bytes()
    result = CliRunner().invoke(
        app, ["unsubscribe", "josé@example.org", "--recipients", str(recipients)]
    )
    assert result.exit_code == 2 and "not suppressed: 'josé@example.org'" in result.output
    assert (recipients / "suppressions.csv").read_bytes() == before
    assert _check(bulletin, recipients)[0] == 0


def test_one_unusable_request_in_an_mbox_does_not_keep_the_others_subscribed(
    copy_sample: Sample, tmp_path: Path
) -> None:
    _, recipients = copy_sample()
    box = tmp_path / "requests.mbox"
    box.write_text(
        "From x Tue Mar 28 09:00:00 2017\nFrom: =?bogus?q?broken?= <not-an-address>\n"
        "Subject: unsubscribe\n\nunsubscribe\n\n"
        "From y Tue Mar 28 09:00:00 2017\nFrom: Lars <disarmament.desk@example.org>\n"
        "Subject: unsubscribe\n\nunsubscribe\n\n"
        "From z Tue Mar 28 09:00:00 2017\nFrom: x@example.org\nSubject: unsubscribe\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=ansi_x3.110-1983\n"
        "Content-Transfer-Encoding: base64\n\n%%%not base64\n"
    )
    result = CliRunner().invoke(
        app, ["unsubscribe", "--from-mbox", str(box), "--recipients", str(recipients)]
    )
    assert result.exit_code == 0, result.output
    assert "suppressed: disarmament.desk@example.org" in result.output
    assert "not suppressed: 'not-an-address'" in result.output
    assert "suppressed: x@example.org" in result.output  # a broken body; the subject says it


@pytest.mark.parametrize(
    "address",
    [
        "A.B@Example.ORG",
        "o'neil+news@sub.Example.co.uk",
        "a..b@x.org",
        ".a@x.org",
        "a.@x.org",
        "a@x",
        "a@x.123",
        "a@-x.org",
        "a@x-.org",
        "a@x.test",
        "a@mail.localhost",
        "a@xn--bcher-kva.example",
        "a@ab--cd.example.org",
        "x" * 65 + "@x.org",
        "a@" + "b" * 64 + ".org",
        "a@" + ("b" * 60 + ".") * 4 + "org",
        "josé@example.org",
        "a@exämple.org",
        "a b@x.org",
        '"quoted"@x.org',
    ],
)
def test_address_normalization_agrees_with_email_validator(address: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    from mailer.suppressions import normalize_address

    try:
        expected: str | None = validate_email(
            address, check_deliverability=False, allow_smtputf8=False
        ).normalized
    except EmailNotValidError:
        expected = None
    try:
        found: str | None = normalize_address(address)
    except ValueError:
        found = None
    assert found == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILER_SEND_BUDGET", "soon"),
        ("MAILER_SEND_BUDGET", "-5m"),
        ("MAILER_FEED_TAG", "urn:isu:bulletin"),
        ("MAILER_NETWORK_TIMEOUT", "0"),
        ("MAILER_RETRY_DELAY", "0"),
        ("MAILER_LOCALES", "en=klingon"),
        ("MAILER_LOCALES", "fr=en_GB"),
        ("MAILER_LOCALES", "de=de_DE"),
        ("MAILER_LIST_NAME", "ISU\nBcc: x@example.org"),
        ("MAILER_LOGO_URL", "http://isu.example.org/logo.png"),
        ("MAILER_LIST_NAME", "ISU\tCCM"),
        ("MAILER_RETRY_DELAY", "two seconds"),
        ("MAILER_BOUNCE_SOFT_LIMIT", "-1"),
    ],
)
def test_malformed_new_settings_are_refused_naming_the_variable(name: str, value: str) -> None:
    result = CliRunner().invoke(app, ["check", str(SAMPLE)], env={name: value})
    assert result.exit_code == 2 and name in result.output, result.output
