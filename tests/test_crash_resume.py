"""A send killed mid-run (kill -9, or Ctrl-C) loses nothing and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import SAMPLE
from .helpers import cli_env, write_list
from .smtp_server import Behaviour, Server

pytestmark = pytest.mark.system  # mailer killed in a subprocess

COUNT = 200
CONNECTIONS = 4


def _env(port: int, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(cli_env(port, tmp_path / "ledger", MAILER_MAX_CONNECTIONS=str(CONNECTIONS)))
    return env


def _command(recipients: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mailer",
        "send",
        str(SAMPLE),
        "--recipients",
        str(recipients),
        "--yes",
    ]


def _start(recipients: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`mailer send --yes` in the background, as staff would start it."""
    return subprocess.Popen(
        _command(recipients), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(server: Server, count: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while len(server.received) < count:
        assert time.monotonic() < deadline, "the send never got going"
        time.sleep(0.01)


def _last_outcomes(ledger: Path) -> dict[str, str]:
    last = {}
    for line in ledger.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        last[record["recipient"].lower()] = record["outcome"]
    return last


def test_kill_9_mid_run_then_rerun_delivers_everyone_with_few_duplicates(tmp_path: Path) -> None:
    with Server(Behaviour(delay=0.02)) as server:
        recipients = write_list(tmp_path / "list", COUNT)
        env = _env(server.port, tmp_path)
        first = _start(recipients, env)
        _wait_for(server, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        before = len(server.received)
        assert before < COUNT

        second = subprocess.run(
            _command(recipients), env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 0, second.stdout + second.stderr
        received = Counter(r.rcpt.lower() for r in server.received)
        assert len(received) == COUNT  # nobody lost
        duplicates = sum(received.values()) - COUNT
        assert duplicates <= CONNECTIONS  # only messages in flight at the kill
        assert "in doubt" in second.stdout
        outcomes = _last_outcomes(tmp_path / "ledger" / "2017-03.jsonl")
        assert len(outcomes) == COUNT and set(outcomes.values()) == {"sent"}


def test_ctrl_c_finishes_messages_in_flight_and_says_how_to_resume(tmp_path: Path) -> None:
    with Server(Behaviour(delay=0.02)) as server:
        recipients = write_list(tmp_path / "list", COUNT)
        env = _env(server.port, tmp_path)
        first = _start(recipients, env)
        _wait_for(server, 40)
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=30)
        assert first.returncode == 1, output
        assert "run the same command again to resume" in output
        outcomes = _last_outcomes(tmp_path / "ledger" / "2017-03.jsonl")
        assert "attempt" not in outcomes.values()  # in-flight messages finished
        assert len(server.received) == len(outcomes) < COUNT

        second = subprocess.run(
            _command(recipients), env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 0, second.stdout + second.stderr
        received = Counter(r.rcpt.lower() for r in server.received)
        assert len(received) == COUNT and set(received.values()) == {1}
