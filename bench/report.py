"""Benchmark: mailer report over 40 issues × 20,000 readers (1.6 million ledger lines).

Run on demand: ``.venv/bin/python bench/report.py [ISSUES] [READERS]``. Writes the
ledgers into a temporary folder (an attempt and an outcome per reader, a few failures
and bounces), then times ``report.build`` and the page, and prints the peak memory.
Asserts nothing.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer import report  # noqa: E402  (after the path is set)

SEGMENTS = ("states", "international-organizations", "civil-society")


def write_ledgers(folder: Path, issues: int, readers: int) -> int:
    """``issues`` ledgers of ``readers`` each; returns the number of lines written."""
    lines = 0
    for number in range(issues):
        issue = f"{2020 + number // 12}-{number % 12 + 1:02d}"
        day = f"{issue}-15T09:{number % 60:02d}:00.000+00:00"
        with (folder / f"{issue}.jsonl").open("w", encoding="utf-8") as handle:
            for index in range(readers):
                address = f"reader{index}@domain{index % 400}.example.org"
                base = {
                    "time": day,
                    "recipient": address,
                    "attempt": 1,
                    "code": None,
                    "reply": None,
                    "message_id": f"<{issue}.{index}@isu.example.org>",
                    "segments": [SEGMENTS[index % 3]],
                }
                handle.write(json.dumps({**base, "outcome": "attempt"}) + "\n")
                failed = index % 500 == 0
                outcome = {"outcome": "failed", "code": 550, "reply": "5.1.1 no such user"}
                handle.write(
                    json.dumps(
                        {**base, **(outcome if failed else {"outcome": "sent", "code": 250})}
                    )
                    + "\n"
                )
                lines += 2
    return lines


def main() -> None:
    issues = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    readers = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = Path(tmp) / "ledger"
        ledgers.mkdir()
        recipients = Path(tmp) / "recipients"
        recipients.mkdir()
        lines = write_ledgers(ledgers, issues, readers)
        start = time.perf_counter()
        built = report.build(ledgers, recipients)
        figures = time.perf_counter() - start
        from datetime import date

        page = report.render(built, "ISU-CCM", None, date(2026, 11, 30))
        total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{issues} issues × {readers:,} readers: {lines:,} ledger lines")
    print(f"figures {figures:.1f} s, with the page {total:.1f} s ({len(page) / 1024:.0f} KB)")
    print(f"peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
