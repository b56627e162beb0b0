"""`mailer new`: a new issue is started by a command, never by copying a folder by hand
(the copy kept the old id, the old send_at and items nobody re-read)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from mailer.cli import app

from .conftest import edit
from .helpers import Sample, cli_env
from .smtp_server import Server


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env or {})


def test_a_new_issue_from_the_last_one_is_drafts_until_edited(
    copy_sample: Sample, tmp_path: Path
) -> None:
    bulletin, recipients = copy_sample()
    root = bulletin.parent
    made = _cli("new", "2017-06", "--from", "2017-03", "--bulletins", str(root))
    assert made.exit_code == 0, made.output
    new = root / "2017-06"
    yaml = (new / "bulletin.yaml").read_text(encoding="utf-8")
    assert "id: 2017-06" in yaml and "id: 2017-03" not in yaml
    assert "send_at: 2017-03-28" not in yaml and "+02:00" in yaml  # Geneva time kept
    assert "# EDIT for 2017-06: title" in yaml
    item = (new / "items" / "01-7msp-save-the-date.md").read_text(encoding="utf-8")
    assert item.startswith("---\ndraft: true")
    assert (new / "items" / "01-7msp-save-the-date.fr.md").exists()
    assert (new / "images" / "7msp-banner.png").exists()
    # A preview shows the drafts; check says what is left; a real send refuses.
    args = ("--recipients", str(recipients))
    checked = _cli("check", str(new), *args)
    assert checked.exit_code == 0 and "4 item(s) are drafts" in " ".join(checked.output.split())
    with Server() as relay:
        env = cli_env(relay.port, tmp_path / "ledger")
        refused = _cli("send", str(new), *args, "--yes", env=env)
        assert refused.exit_code == 2 and "field 'draft'" in refused.output
        send_at = yaml.split("send_at: ")[1].split()[0]  # the proposal: just due then
        dispatched = _cli(
            "dispatch",
            "--bulletins",
            str(root),
            *args,
            "--only",
            "2017-06",
            "--now",
            send_at,
            "--yes",
            env=env,
        )
        assert "draft" in dispatched.output and dispatched.exit_code == 1
        # Edited: the drafts are gone, and the English item changes; its copied
        # translations still name the old English, so they are stale, not silently current.
        for path in (new / "items").glob("0*.md"):
            text = path.read_text(encoding="utf-8")
            if text.startswith("---\ndraft: true"):
                path.write_text("---\n" + text.split("\n", 2)[2], encoding="utf-8")
        edit(new / "items" / "01-7msp-save-the-date.md", "2017-08-18", "2017-08-25")
        stale = _cli("send", str(new), *args, "--yes", env=env)
        assert stale.exit_code == 2 and "01-7msp-save-the-date.fr" in stale.output
        assert relay.received == []


def test_a_new_issue_needs_a_free_and_valid_id(copy_sample: Sample) -> None:
    bulletin, _ = copy_sample()
    root = bulletin.parent
    taken = _cli("new", "2017-03", "--bulletins", str(root))
    assert taken.exit_code == 2 and "exists already" in taken.output
    bad = _cli("new", "2017/06", "--bulletins", str(root))
    assert bad.exit_code == 2 and not (root / "2017").exists()
    missing = _cli("new", "2017-06", "--from", "2016-12", "--bulletins", str(root))
    assert missing.exit_code == 2 and not (root / "2017-06").exists()


def test_a_blank_new_issue_loads_and_names_the_month_in_each_language(
    copy_sample: Sample,
) -> None:
    bulletin, recipients = copy_sample()
    root = bulletin.parent
    env = {"MAILER_FROM": "ISU-CCM <newsletter@isu.example.org>"}
    assert _cli("new", "2027-01", "--bulletins", str(root), env=env).exit_code == 0
    yaml = (root / "2027-01" / "bulletin.yaml").read_text(encoding="utf-8")
    assert 'title: "ISU-CCM — Newsletter, ' in yaml and "title_es" in yaml
    assert " de 20" in yaml.split("title_es:")[1].splitlines()[0]  # "noviembre de 2026"
    checked = _cli("check", str(root / "2027-01"), "--recipients", str(recipients), env=env)
    assert checked.exit_code == 0, checked.output
    assert "1 item(s) are drafts" in " ".join(checked.output.split())


def test_a_new_issue_can_start_from_the_sample_by_its_path(copy_sample: Sample) -> None:
    bulletin, _ = copy_sample()
    root = bulletin.parent / "mine"
    made = _cli("new", "2026-12", "--from", str(bulletin), "--bulletins", str(root))
    assert made.exit_code == 0, made.output
    assert (root / "2026-12" / "items" / "01-7msp-save-the-date.md").exists()
    blank = _cli("new", "2027-01", "--bulletins", str(root))
    yaml = (root / "2027-01" / "bulletin.yaml").read_text(encoding="utf-8")
    assert blank.exit_code == 0 and "January 2027" in yaml and "janvier 2027" in yaml  # the id's


def test_what_a_copy_holds_that_could_hurt_is_refused_or_made_a_draft(
    copy_sample: Sample, tmp_path: Path
) -> None:
    """From a hostile review: a dotted item name escaped the draft mark, a block-style
    items list leaked into the preheader, a symlink copied its target, and odd files gave
    tracebacks."""
    bulletin, recipients = copy_sample()
    root = bulletin.parent
    items = bulletin / "items"
    (items / "05-strategy-2.0.md").write_text("---\ntitle: Strategy 2.0\n---\nText.\n")
    yaml = bulletin / "bulletin.yaml"
    yaml.write_text(yaml.read_text() + "items:\n  - 01-7msp-save-the-date\n  - 05-strategy-2.0\n")
    made = _cli("new", "2017-06", "--from", "2017-03", "--bulletins", str(root))
    assert made.exit_code == 0, made.output
    copied = root / "2017-06" / "items" / "05-strategy-2.0.md"
    assert copied.read_text().startswith("---\ndraft: true")
    new_yaml = (root / "2017-06" / "bulletin.yaml").read_text()
    assert "- 01-7msp" not in new_yaml  # the old order is not glued to the preheader
    checked = _cli("check", str(root / "2017-06"), "--recipients", str(recipients))
    assert "5 item(s) are drafts" in " ".join(checked.output.split())
    # A symbolic link to a secret is refused, and nothing is left half-written.
    (items / "06-secret.fr.md").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "secret.txt").write_text("SECRET=hunter2\n")
    linked = _cli("new", "2017-09", "--from", "2017-03", "--bulletins", str(root))
    assert linked.exit_code == 2 and "symbolic link" in linked.output
    assert not (root / "2017-09").exists()
    (items / "06-secret.fr.md").unlink()
    (items / "07-latin1.md").write_bytes(b"---\ntitle: Caf\xe9\n---\nText.\n")
    latin = _cli("new", "2017-09", "--from", "2017-03", "--bulletins", str(root))
    assert latin.exit_code == 2 and "not UTF-8" in latin.output
    not_a_folder = _cli("new", "2017-09", "--bulletins", str(yaml))
    assert not_a_folder.exit_code == 2 and "Traceback" not in not_a_folder.output


def test_a_draft_issue_is_never_published(copy_sample: Sample, tmp_path: Path) -> None:
    bulletin, recipients = copy_sample()
    root = bulletin.parent
    assert _cli("new", "2017-06", "--bulletins", str(root)).exit_code == 0
    yaml = root / "2017-06" / "bulletin.yaml"
    text = yaml.read_text()
    send_at = text.split("send_at: ")[1].split()[0]
    yaml.write_text(text.replace(send_at, "2017-06-01T09:00:00+02:00"))  # due long ago
    site = tmp_path / "site"
    published = _cli(
        "publish",
        "--bulletins",
        str(root),
        "--recipients",
        str(recipients),
        "--out",
        str(site),
        "--now",
        "2017-07-01T00:00:00+00:00",
    )
    assert published.exit_code == 0, published.output
    assert not (site / "2017-06").exists() and (site / "2017-03").exists()
