"""`mailer status` says what the ledger holds, whatever happened to the lists since."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mailer.cli import app
from mailer.ledger import read_records

from .conftest import SAMPLE
from .smtp_server import Behaviour, Server
from .test_delivery import cli_env, send_cli, write_list


def _status(recipients: Path, env: dict[str, str]) -> dict[str, dict[str, int]]:
    result = CliRunner().invoke(
        app, ["status", str(SAMPLE), "--recipients", str(recipients), "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    data: dict[str, dict[str, int]] = json.loads(result.output)["total"]
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
