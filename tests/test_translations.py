"""Translations cannot go stale unnoticed: each says which English it translates; a
changed English item blocks the real send until the translation is reviewed and
stamped, or the send is told to give those readers the English."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mailer.cli import app
from mailer.translations import blob_id, word_diff

from .conftest import edit, html_of, parse
from .helpers import Sample, cli_env
from .smtp_server import Server

ITEM = "items/01-7msp-save-the-date"


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env or {})


def _stamp(bulletin: Path, recipients: Path, name: str) -> Result:
    """`mailer translations BULLETIN --stamp NAME`, as a translator's reviewer runs it."""
    return _cli("translations", str(bulletin), "--recipients", str(recipients), "--stamp", name)


def _move_the_deadline(bulletin: Path) -> None:
    """The English item changes after its translations were made (and stamped)."""
    edit(bulletin / f"{ITEM}.md", "deadline: 2017-08-18", "deadline: 2017-08-25")


def test_the_id_is_the_one_git_gives_a_file() -> None:
    # `printf 'hello\n' | git hash-object --stdin`, a value quoted in git's own docs.
    assert blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_a_translation_older_than_its_english_blocks_the_send_until_stamped(
    copy_sample: Sample, tmp_path: Path
) -> None:
    bulletin, recipients = copy_sample()
    _move_the_deadline(bulletin)
    table = _cli("translations", str(bulletin), "--recipients", str(recipients))
    assert table.exit_code == 0
    row = next(line for line in table.output.splitlines() if "01-7msp-save-the-date" in line)
    assert row.count("stale") == 2  # French and Spanish
    with Server() as relay:
        env = cli_env(relay.port, tmp_path / "ledger")
        send = ["send", str(bulletin), "--recipients", str(recipients), "--yes"]
        refused = _cli(*send, env=env)
        assert refused.exit_code == 2, refused.output
        text = " ".join(refused.output.split())
        assert "01-7msp-save-the-date.fr" in text and "--allow-stale-translations" in text
        assert relay.received == [] and not (tmp_path / "ledger").exists()
        stamped = _stamp(bulletin, recipients, "01-7msp-save-the-date.fr")
        assert "stamped:" in stamped.output and stamped.output.count("stale") == 1  # es left
        still = _cli(*send, env=env)
        assert still.exit_code == 2 and "01-7msp-save-the-date.es" in still.output
        sent = _cli(*send, "--allow-stale-translations", env=env)
        assert sent.exit_code == 0, sent.output
        assert "01-7msp-save-the-date.es is stale" in " ".join(sent.output.split())
        pages = [html_of(parse(r.data)) for r in relay.received]
    spanish = next(page for page in pages if '<html lang="es"' in page)
    french = next(page for page in pages if '<html lang="fr"' in page)
    assert "Save the date" in spanish and "Reserve la fecha" not in spanish  # English item
    assert "vos agendas" in french  # reviewed and stamped: in French


def test_a_scheduled_send_leaves_an_issue_with_a_stale_translation_to_a_person(
    copy_sample: Sample, tmp_path: Path
) -> None:
    bulletin, recipients = copy_sample()
    _move_the_deadline(bulletin)
    with Server() as relay:
        env = cli_env(relay.port, tmp_path / "ledger")
        result = _cli(
            "dispatch",
            "--bulletins",
            str(bulletin.parent),
            "--recipients",
            str(recipients),
            "--now",
            "2017-03-28T09:15:00+02:00",
            "--yes",
            env=env,
        )
        assert relay.received == []
    assert result.exit_code == 1 and "stale translation" in result.output


def test_a_source_that_is_not_an_id_is_named_with_its_field(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    edit(bulletin / f"{ITEM}.fr.md", "source: ", "source: reviewed-by-marie ")
    result = _cli("check", str(bulletin), "--recipients", str(recipients))
    assert result.exit_code == 2 and "field 'source'" in result.output


def test_the_word_diff_shows_only_what_changed() -> None:
    old = "The deadline for registration is 18 August 2017. Venue: Geneva."
    new = "The deadline for registration is 25 August 2017. Venue: Geneva."
    assert word_diff(old, new) == "[-18-]{+25+}"


@pytest.mark.system  # runs git
def test_check_shows_the_english_change_from_git_history(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    root = bulletin.parent.parent

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=T", "-c", "user.email=t@example.org", *args],
            cwd=root,
            check=True,
            capture_output=True,
        )

    git("init", "--quiet")
    git("add", ".")
    git("commit", "--quiet", "-m", "issue as translated")
    _move_the_deadline(bulletin)
    result = _cli("check", str(bulletin), "--recipients", str(recipients))
    text = " ".join(result.output.split())
    assert "01-7msp-save-the-date.fr: the English item changed" in text
    assert "English change: [-2017-08-18-]{+2017-08-25+}" in text


def test_the_id_is_the_same_for_a_windows_checkout() -> None:
    """A CRLF checkout (core.autocrlf) showed every stamped translation stale."""
    assert blob_id(b"title: x\r\n") == blob_id(b"title: x\n")


def test_stamping_writes_into_the_front_matter_and_keeps_line_ends(copy_sample: Sample) -> None:
    bulletin, recipients = copy_sample()
    french = bulletin / f"{ITEM}.fr.md"
    text = french.read_text(encoding="utf-8").replace("source:", "# old source:")
    # The loader closes the front matter with ' ---' too; the file is saved with CRLF.
    head, body = text.split("\n---\n", 1)
    french.write_bytes((head + "\n ---\n" + body).replace("\n", "\r\n").encode())
    stamped = _stamp(bulletin, recipients, f"{ITEM.split('/')[1]}.fr")
    assert stamped.exit_code == 0, stamped.output
    data = french.read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n")  # still CRLF throughout
    front, _, rest = data.partition(b"\r\n ---\r\n")
    assert b"\r\nsource: " in front and b"source:" not in rest.replace(b"# old source:", b"")
    row = next(line for line in stamped.output.splitlines() if line.startswith("│ 01-7msp"))
    assert "current" in row


def test_stamping_a_translation_that_does_not_exist_names_those_that_do(
    copy_sample: Sample,
) -> None:
    bulletin, recipients = copy_sample()
    before = {p: p.read_bytes() for p in (bulletin / "items").glob("*.md")}
    refused = _stamp(bulletin, recipients, "03-oslo-process-ten-years.fr")
    assert refused.exit_code == 2 and "01-7msp-save-the-date.fr" in refused.output
    assert {p: p.read_bytes() for p in (bulletin / "items").glob("*.md")} == before
