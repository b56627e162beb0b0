"""Benchmark: how fast the command line answers.

Run on demand (``.venv/bin/python bench/startup.py``); prints figures, asserts
nothing. Measures, as the median of several runs in fresh processes:

- ``mailer --help`` against a bare ``python -c pass`` (the target: within 0.3 s of it);
- ``mailer status --json`` on an issue whose ledger has 100,000 lines (50,000
  recipients, each with an attempt and a sent record; target: within 1.5 s).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compose import ROOT, generate  # bench/ is not a package

RUNS = 5
RECIPIENTS = 50_000


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    """Median wall time of ``command`` over RUNS runs."""
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_ledger(path: Path, count: int) -> None:
    """An attempt and a sent record per recipient: 2 × ``count`` lines."""
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            for outcome in ("attempt", "sent"):
                record = {
                    "time": "2017-03-28T07:00:00.000+00:00",
                    "recipient": f"reader{index}@example.org",
                    "outcome": outcome,
                    "attempt": 1,
                    "code": 250 if outcome == "sent" else None,
                    "reply": "2.0.0 Ok: queued" if outcome == "sent" else None,
                    "message_id": f"<2017-03.{index:024x}@isu.example.org>",
                    "segments": ["states"],
                }
                handle.write(json.dumps(record) + "\n")


def main() -> None:
    python = sys.executable
    mailer = str(Path(python).parent / "mailer")
    bare = timed([python, "-c", "pass"])
    help_time = timed([mailer, "--help"])
    print(f"python -c pass:        {bare * 1000:6.0f} ms")
    over = (help_time - bare) * 1000
    print(f"mailer --help:         {help_time * 1000:6.0f} ms ({over:.0f} ms over bare)")
    with tempfile.TemporaryDirectory() as tmp:
        recipients = Path(tmp) / "recipients"
        generate(recipients, RECIPIENTS)
        ledger = Path(tmp) / "ledger"
        ledger.mkdir()
        write_ledger(ledger / "2017-03.jsonl", RECIPIENTS)
        env = {"MAILER_LEDGER_DIR": str(ledger), "PATH": ""}
        command = [
            mailer,
            "status",
            str(ROOT / "examples" / "bulletins" / "2017-03"),
            "--json",
            "--recipients",
            str(recipients),
        ]
        status_time = timed(command, env)
        lines = sum(1 for _ in (ledger / "2017-03.jsonl").open())
        print(
            f"mailer status --json:  {status_time * 1000:6.0f} ms ({lines:,}-line ledger, "
            f"{RECIPIENTS:,} recipients)"
        )


if __name__ == "__main__":
    main()
