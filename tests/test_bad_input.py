"""Bad content or recipients: a one-paragraph error naming file, line and field; exit 2;
nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli import app

from .conftest import edit
from .helpers import Sample


def _dry_run(bulletin: Path, recipients: Path, *extra: str) -> tuple[int, str]:
    out = bulletin.parent.parent / "previews"
    result = CliRunner().invoke(
        app,
        [
            "send",
            str(bulletin),
            "--dry-run",
            "--recipients",
            str(recipients),
            "--out",
            str(out),
            *extra,
        ],
    )
    return result.exit_code, result.output


def _assert_refused(code: int, output: str, *fragments: str) -> None:
    assert code == 2, output
    for fragment in fragments:
        assert fragment in output, output


ITEM = "items/01-7msp-save-the-date.md"


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "bulletin.yaml",
            "segments: [states,",
            "segments: [states,,: [",
            ("bulletin.yaml, line 6", "YAML syntax error"),
        ),
        (
            ITEM,
            'title: "Save the date',
            '# title: "Save the date',
            (ITEM.split("/")[1], "line 2", "field 'title'", "required"),
        ),
        (ITEM, "alt: ", "note: ", ("field 'note'", "unknown field", "line 9")),
        (ITEM, 'alt: "Seventh', 'caption: "Seventh', ("unknown field",)),
        (
            "items/04-bangkok-regional-seminar.md",
            "location:",
            "audience: [states, donors]\nlocation:",
            ("line 5", "field 'audience'", "unknown segment 'donors'"),
        ),
        (
            "items/02-president-at-ndm-un.md",
            "The full statement is on the Convention's website.",
            "See [the statement](statement.html).",
            ("line 21", "field 'body'", "not absolute"),
        ),
        (
            "items/01-7msp-save-the-date.fr.md",
            "alt:",
            "deadline: 2017-08-19\nalt:",
            ("01-7msp-save-the-date.fr.md", "field 'deadline'", "translation may set only"),
        ),
        (
            "bulletin.yaml",
            "send_at: 2017-03-28T09:00:00+02:00",
            "send_at: 2017-03-28T09:00:00",
            ("line 5", "field 'send_at'", "time zone"),
        ),
        (
            "bulletin.yaml",
            'subject: "CCM newsletter:',
            'subject: "CCM\\nBcc: x@example.com',
            ("field 'subject'", "line break"),
        ),
    ],
)
def test_content_errors_name_file_line_and_field(
    copy_sample: Sample, file: str, old: str, new: str, expected: tuple[str, ...]
) -> None:
    bulletin, recipients = copy_sample()
    edit(bulletin / file, old, new)
    code, output = _dry_run(bulletin, recipients)
    _assert_refused(code, output, *expected)
    assert not (bulletin.parent.parent / "previews").exists()


def test_image_without_alt_is_refused(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    edit(
        bulletin / ITEM,
        'alt: "Seventh Meeting of States Parties, Geneva, 4 to 6 September 2017"\n',
        "",
    )
    code, output = _dry_run(bulletin, recipients)
    _assert_refused(
        code, output, "01-7msp-save-the-date.md, line 8", "field 'alt'", "needs alt text"
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("not-an-address,Someone,,,en", ("states.csv, line 9", "field 'email'")),
        (
            "someone@example.org,Someone,,,de",
            ("states.csv, line 9", "field 'language'", "unknown language 'de'"),
        ),
        (
            'someone@example.org,"Eve\r\nBcc: x@example.com",,,en',
            ("states.csv, line 9", "field 'name'", "line break"),
        ),
    ],
)
def test_bad_recipient_row_stops_the_run_before_anything_is_written(
    copy_sample: Sample, row: str, expected: tuple[str, ...]
) -> None:
    bulletin, recipients = copy_sample()
    with (recipients / "states.csv").open("a", encoding="utf-8", newline="") as handle:
        handle.write(row + "\n")
    code, output = _dry_run(bulletin, recipients)
    _assert_refused(code, output, *expected)
    assert not (bulletin.parent.parent / "previews").exists()


def test_every_bad_row_is_listed_and_skip_invalid_leaves_them_out(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    with (recipients / "civil-society.csv").open("a", encoding="utf-8") as handle:
        handle.write("broken@,A,,,en\nfine@example.org,B,,,en\nalso@bad@example.org,C,,,en\n")
    code, output = _dry_run(bulletin, recipients)
    _assert_refused(
        code, output, "civil-society.csv, line 7", "civil-society.csv, line 9", "--skip-invalid"
    )

    code, output = _dry_run(bulletin, recipients, "--skip-invalid")
    assert code == 0, output
    assert "skipped:" in output and "line 7" in output and "line 9" in output
    mbox = (bulletin.parent.parent / "previews" / "2017-03.mbox").read_bytes()
    assert b"To: B <fine@example.org>" in mbox
    assert mbox.count(b"\nFrom MAILER-DAEMON ") + 1 == 14


def test_conflicting_rows_for_one_address_warn_and_first_wins(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    with (recipients / "states.csv").open("a", encoding="utf-8") as handle:
        handle.write("research@example.com,Thomas Becker,,,fr\n")
    code, output = _dry_run(bulletin, recipients)
    assert code == 0, output
    assert "warning:" in output and "research@example.com also appears" in output
    mbox = (bulletin.parent.parent / "previews" / "2017-03.mbox").read_bytes()
    # states comes first in bulletin.yaml: its row (French, "Thomas Becker") wins.
    assert b"To: Thomas Becker <research@example.com>" in mbox
    assert b"Tom Becker" not in mbox


def test_unknown_segment_option_is_refused(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    code, output = _dry_run(bulletin, recipients, "--segment", "donors")
    _assert_refused(code, output, "--segment donors", "bulletin.yaml")


def test_bad_setting_names_the_variable_and_hides_the_value(
    copy_sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulletin, recipients = copy_sample()
    monkeypatch.setenv("MAILER_SMTP_PORT", "not-a-port")
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "s3cret-pa55")
    code, output = _dry_run(bulletin, recipients)
    _assert_refused(code, output, "MAILER_SMTP_PORT")
    assert "s3cret-pa55" not in output and "not-a-port" not in output


def test_a_tired_editors_mistakes_are_all_reported_in_one_run_in_file_order(
    copy_sample: Sample,
) -> None:
    """Eight ordinary mistakes took nine --dry-run runs, in a confusing order."""
    bulletin, recipients = copy_sample()
    items = bulletin / "items"
    edit(bulletin / "bulletin.yaml", "date: 2017-03-27", "date: 2017-04-31")
    edit(bulletin / "bulletin.yaml", "segments: [states,", "segments: [state,")
    edit(items / "01-7msp-save-the-date.md", 'alt: "Seventh', 'alt_text: "Seventh')
    edit(
        items / "02-president-at-ndm-un.md",
        "title: The CCM President at the 20th NDM-UN meeting",
        "title: The CCM President: 20th NDM-UN meeting",
    )
    edit(items / "03-oslo-process-ten-years.md", "title: Ten", "titel: Ten")
    edit(
        items / "04-bangkok-regional-seminar.md",
        "\n---\n",
        "\n---\nSee [the agenda](agenda.pdf).\n",
    )
    edit(items / "01-7msp-save-the-date.fr.md", "location:", "starts: 2017-09-04\nlocation:")
    with (recipients / "states.csv").open("a", encoding="utf-8") as handle:
        handle.write("not-an-address,Someone,Mission,Chile,es\n")
    result = CliRunner().invoke(
        app, ["send", str(bulletin), "--recipients", str(recipients), "--dry-run"]
    )
    assert result.exit_code == 2
    text = result.output
    assert "problems, in file order:" in text
    expected = [
        ("bulletin.yaml", "field 'date'"),  # 2017-04-31 names its field
        ("bulletin.yaml", "field 'segments'"),
        ("01-7msp-save-the-date.md", "field 'alt':"),  # the image lost its alt text (line 8)
        ("01-7msp-save-the-date.md", "field 'alt_text'"),  # line 9
        ("01-7msp-save-the-date.fr.md", "field 'starts'"),
        ("02-president-at-ndm-un.md", "must be in quotes"),  # the unquoted colon's hint
        ("03-oslo-process-ten-years.md", "Did you mean 'title'?"),
        ("04-bangkok-regional-seminar.md", "agenda.pdf"),
        ("states.csv", "field 'email'"),
    ]
    lines = [line for line in text.split("\n- ")[1:]]
    found = [
        next(i for i, line in enumerate(lines) if file in line and detail in line)
        for file, detail in expected
    ]
    assert found == sorted(found), lines  # bulletin.yaml, then the items in order, then lists


def test_a_missing_date_is_named_beside_another_fields_impossible_date(
    copy_sample: Sample,
) -> None:
    bulletin, recipients = copy_sample()
    yaml = bulletin / "bulletin.yaml"
    text = yaml.read_text(encoding="utf-8").replace("date: 2017-03-27\n", "")
    yaml.write_text(text.replace("send_at: 2017-03-28T09:00:00+02:00", "send_at: 2017-02-30"))
    result = CliRunner().invoke(app, ["check", str(bulletin), "--recipients", str(recipients)])
    assert result.exit_code == 2
    assert "field 'send_at'" in result.output and "field 'date'" in result.output


def test_a_draft_flag_that_is_not_yes_or_no_is_named(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    edit(
        bulletin / "items" / "03-oslo-process-ten-years.md",
        "title: Ten",
        "draft: maybe\ntitle: Ten",
    )
    result = CliRunner().invoke(app, ["check", str(bulletin), "--recipients", str(recipients)])
    assert result.exit_code == 2 and "field 'draft'" in result.output
