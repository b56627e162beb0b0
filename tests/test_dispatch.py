"""`mailer dispatch`: what it decides with --now, and that it sends each bulletin once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mailer import dispatch as dispatcher
from mailer import pipeline
from mailer.cli import app

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, make_settings
from .helpers import FAST, cli_env, settings_for
from .smtp_server import Server, refusing_authenticator

BEFORE = "2017-03-28T08:59:00+02:00"
DUE = "2017-03-28T09:15:00+02:00"
STALE = "2017-04-02T09:15:00+02:00"  # 5 days late, beyond the 72 h window


@pytest.fixture
def bulletins(tmp_path: Path) -> Path:
    root = tmp_path / "bulletins"
    shutil.copytree(SAMPLE, root / "2017-03")
    return root


def dispatch(server: Server, tmp_path: Path, bulletins: Path, *args: str) -> Result:
    env = cli_env(server.port, tmp_path / "ledger")
    command = ["dispatch", "--bulletins", str(bulletins), "--recipients", str(SAMPLE_RECIPIENTS)]
    return CliRunner().invoke(app, [*command, "--yes", *args], env=env)


def test_not_yet_due_sends_nothing(server: Server, tmp_path: Path, bulletins: Path) -> None:
    result = dispatch(server, tmp_path, bulletins, "--now", BEFORE)
    assert result.exit_code == 0, result.output
    assert "not due" in result.output and server.received == []


def test_due_bulletin_is_sent_then_complete(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    first = dispatch(server, tmp_path, bulletins, "--now", DUE)
    assert first.exit_code == 0, first.output
    assert "13 sent" in first.output and len(server.received) == 13
    again = dispatch(server, tmp_path, bulletins, "--now", DUE)
    assert again.exit_code == 0 and "complete" in again.output
    assert len(server.received) == 13


def test_interrupted_send_is_resumed_for_the_rest_only(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    settings = settings_for(server.port, tmp_path)
    job = pipeline.prepare(
        bulletins / "2017-03", settings, recipients_dir=SAMPLE_RECIPIENTS, dry_run=False, limit=5
    )
    with pipeline.open_ledger(job, settings) as ledger:
        pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    result = dispatch(server, tmp_path, bulletins, "--now", DUE)
    assert result.exit_code == 0, result.output
    assert "8 sent" in result.output
    assert len(server.received) == 13 and set(server.by_rcpt().values()) == {1}


def test_stale_bulletin_is_reported_not_sent(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    result = dispatch(server, tmp_path, bulletins, "--now", STALE)
    assert result.exit_code == 1
    assert "stale" in result.output and "MAILER_DISPATCH_WINDOW" in result.output
    assert server.received == []
    settings = make_settings(ledger_dir=tmp_path / "ledger")
    [decision] = dispatcher.decide(
        bulletins, settings, dispatcher.parse_now(STALE), recipients_dir=SAMPLE_RECIPIENTS
    )
    assert "is 5 days ago" in decision.detail  # not "120 h"


def test_two_bulletins_due_at_once_are_both_sent(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    second = bulletins / "2017-06"
    shutil.copytree(bulletins / "2017-03", second)
    yaml = (second / "bulletin.yaml").read_text(encoding="utf-8")
    (second / "bulletin.yaml").write_text(yaml.replace("id: 2017-03", "id: 2017-06"))
    result = dispatch(server, tmp_path, bulletins, "--now", DUE)
    assert result.exit_code == 0, result.output
    assert len(server.received) == 26
    assert (tmp_path / "ledger" / "2017-03.jsonl").exists()
    assert (tmp_path / "ledger" / "2017-06.jsonl").exists()


def test_dry_run_says_what_would_go_out_and_sends_nothing(
    server: Server, tmp_path: Path, bulletins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = dispatch(server, tmp_path, bulletins, "--now", DUE, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would send" in result.output and server.received == []
    assert (tmp_path / "previews" / "2017-03.mbox").exists()
    assert not (tmp_path / "ledger" / "2017-03.jsonl").exists()


def test_a_claim_without_its_release_blocks_until_forced(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    claimed = dispatch(server, tmp_path, bulletins, "--now", DUE, "--claim", "--run-id", "41-1")
    assert claimed.exit_code == 0 and "claimed" in claimed.output
    assert server.received == []
    # Run 41-1's outcomes never came back: another run must not send.
    blocked = dispatch(server, tmp_path, bulletins, "--now", DUE, "--run-id", "42-1")
    assert blocked.exit_code == 1 and "blocked" in blocked.output
    assert "artifact" in blocked.output and server.received == []
    forced = dispatch(server, tmp_path, bulletins, "--now", DUE, "--force", "2017-03")
    assert forced.exit_code == 0, forced.output
    assert len(server.received) == 13


def test_the_claiming_run_sends_what_it_claimed(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    dispatch(server, tmp_path, bulletins, "--now", DUE, "--claim", "--run-id", "43-1")
    sent = dispatch(server, tmp_path, bulletins, "--now", DUE, "--run-id", "43-1")
    assert sent.exit_code == 0, sent.output
    assert len(server.received) == 13
    ledger = (tmp_path / "ledger" / "2017-03.jsonl").read_text(encoding="utf-8")
    assert ledger.count('"run": "43-1"') == 13 * 2 + 2  # attempts, outcomes, claim, release


def test_now_without_a_time_zone_is_refused(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    result = dispatch(server, tmp_path, bulletins, "--now", "2017-03-28T09:15:00")
    assert result.exit_code == 2 and "--now" in result.output


def test_a_misconfigured_run_claims_nothing(
    server: Server, tmp_path: Path, bulletins: Path
) -> None:
    env = cli_env(server.port, tmp_path / "ledger")
    del env["MAILER_FROM"]
    command = ["dispatch", "--bulletins", str(bulletins), "--recipients", str(SAMPLE_RECIPIENTS)]
    result = CliRunner().invoke(
        app, [*command, "--now", DUE, "--claim", "--run-id", "44-1"], env=env
    )
    assert result.exit_code == 2 and "MAILER_FROM" in result.output
    assert not (tmp_path / "ledger" / "2017-03.jsonl").exists()


def test_a_send_that_fails_before_sending_releases_its_claim(
    tmp_path: Path, bulletins: Path
) -> None:
    with Server(authenticator=refusing_authenticator, auth_require_tls=False) as refused:
        env = cli_env(
            refused.port,
            tmp_path / "ledger",
            MAILER_SMTP_USERNAME="isu",
            MAILER_SMTP_PASSWORD="wrong",
        )
        command = [
            "dispatch",
            "--bulletins",
            str(bulletins),
            "--recipients",
            str(SAMPLE_RECIPIENTS),
        ]
        runner = CliRunner()
        runner.invoke(app, [*command, "--now", DUE, "--claim", "--run-id", "45-1"], env=env)
        failed = runner.invoke(app, [*command, "--now", DUE, "--yes", "--run-id", "45-1"], env=env)
        assert failed.exit_code == 2 and "refused the login" in failed.output
        # The outcomes (none) came back with a release: the next run is not blocked.
        later = runner.invoke(app, [*command, "--now", DUE, "--dry-run"], env=env)
        assert "would send" in later.output and "blocked" not in later.output
