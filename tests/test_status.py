"""`mailer status` says what the ledger holds, whatever happened to the lists since."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mailer.cli import app
from mailer.ledger import read_records

from .conftest import SAMPLE
from .helpers import cli_env, send_cli, write_list
from .smtp_server import Behaviour, Server


def _status(recipients: Path, env: dict[str, str]) -> dict[str, int]:
    result = CliRunner().invoke(
        app, ["status", str(SAMPLE), "--recipients", str(recipients), "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    data: dict[str, int] = json.loads(result.output)["total"]
    return data


def test_status_keeps_failures_and_removed_readers_the_ledger_knows(tmp_path: Path) -> None:
    recipients = write_list(tmp_path / "recipients", 10)
    dead = {"reader4@example.org": "550 5.1.1 No such user"}
    with Server(Behaviour(reject_rcpt=dead)) as server:
        env = cli_env(server.port, tmp_path / "ledger")
        sent = send_cli(recipients, env)
    assert sent.exit_code == 1, sent.output  # this run met a permanent failure
    assert "reader4@example.org" in (recipients / "suppressions.csv").read_text()
    # Someone also removes a reader who was sent to from the CSV.
    states = recipients / "states.csv"
    states.write_text(
        "".join(
            line for line in states.read_text().splitlines(keepends=True) if "reader0@" not in line
        )
    )
    ledger = list(read_records(tmp_path / "ledger" / "2017-03.jsonl"))
    held = {r.recipient: r.outcome for r in ledger}
    expected = {
        "sent": sum(o == "sent" for o in held.values()),
        "failed": sum(o == "failed" for o in held.values()),
        "deferred": 0,
        "pending": 0,
    }
    assert expected == {"sent": 9, "failed": 1, "deferred": 0, "pending": 0}
    assert _status(recipients, env) == expected
    table = CliRunner().invoke(
        app, ["status", str(SAMPLE), "--recipients", str(recipients)], env=env
    )
    assert "failed: reader4@example.org (suppressed since): 550 5.1.1 No such user" in (
        table.output
    )
    # The failure is final: the issue is complete, a rerun sends nothing and exits 0.
    again = send_cli(recipients, env)
    assert "Nothing to send." in again.output and again.exit_code == 0, again.output


def test_status_counts_a_new_reader_as_pending(tmp_path: Path) -> None:
    recipients = write_list(tmp_path / "recipients", 6)
    with Server() as server:
        env = cli_env(server.port, tmp_path / "ledger")
        send_cli(recipients, env)
    with (recipients / "civil-society.csv").open("a") as handle:
        handle.write("newcomer@example.org,Newcomer,en\n")
    assert _status(recipients, env) == {"sent": 6, "failed": 0, "deferred": 0, "pending": 1}


def test_status_counts_returned_reports_and_names_a_domain_refusing_several_readers(
    tmp_path: Path,
) -> None:
    """Three readers at one domain refused for policy: a blocklisting, not dead mailboxes."""
    recipients = write_list(tmp_path / "recipients", 6)
    with Server() as relay:
        env = cli_env(relay.port, tmp_path / "ledger")
        assert send_cli(recipients, env).exit_code == 0
    ledger = tmp_path / "ledger" / "2017-03.jsonl"
    replies = {
        "reader0@example.org": "refused: 5.7.1 Service unavailable; client host blocked",
        "reader1@example.org": "refused: 5.7.1 blocked using zen.spamhaus.org",
        "reader2@example.org": "refused: 5.7.1 Message rejected as spam",
        "reader3@example.org": "hard: 5.1.1 User unknown",
        "reader4@example.org": "soft: 4.2.2 Mailbox full",
    }
    with ledger.open("a") as handle:
        for number, (address, reply) in enumerate(replies.items()):
            handle.write(
                json.dumps(
                    {
                        "time": "2017-03-29T00:00:00+00:00",
                        "recipient": address,
                        "outcome": "bounce",
                        "attempt": 0,
                        "code": None,
                        "reply": reply,
                        "message_id": "",
                        "segments": [],
                        "run": f"<r{number}@mx>",
                    }
                )
                + "\n"
            )
    args = ["status", str(SAMPLE), "--recipients", str(recipients)]
    shown = CliRunner().invoke(app, args, env=env)
    assert "1 dead address(es)" in shown.output and "1 soft" in shown.output
    assert "example.org refused 3 readers" in " ".join(shown.output.split())
    data = json.loads(CliRunner().invoke(app, [*args, "--json"], env=env).output)
    assert data["bounces"] == {"hard": 1, "soft": 1, "refused": 3}
    assert data["refusing_domains"][0]["domain"] == "example.org"
    assert data["refusing_domains"][0]["readers"] == 3


def test_a_reader_mailed_then_unsubscribed_is_sent_not_never_mailed(tmp_path: Path) -> None:
    """status said "in suppressions.csv: never mailed" of readers this issue reached."""
    recipients = write_list(tmp_path / "recipients", 6)
    with Server() as server:
        env = cli_env(server.port, tmp_path / "ledger")
        assert send_cli(recipients, env).exit_code == 0
    with (recipients / "suppressions.csv").open("w") as handle:
        handle.write("email,reason\nreader1@example.org,one-click unsubscribe\n")
    table = CliRunner().invoke(
        app, ["status", str(SAMPLE), "--recipients", str(recipients)], env=env
    )
    text = " ".join(table.output.split())
    assert "1 reader(s) received this issue and unsubscribed or bounced since" in text
    assert "never mailed." not in text and "not mailed this issue" not in text
    # A dry run of the complete issue says what a real send would do now.
    dry = CliRunner().invoke(
        app,
        [
            "send",
            str(SAMPLE),
            "--recipients",
            str(recipients),
            "--dry-run",
            "--out",
            str(tmp_path / "preview"),
        ],
        env=env,
    )
    assert dry.exit_code == 0, dry.output
    assert "5 of them done in earlier runs: a real send now would mail 0" in " ".join(
        dry.output.split()
    )
