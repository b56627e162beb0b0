"""Benchmark: messages composed into the dry-run mbox per second, and peak memory.

Run on demand (``make bench`` or ``.venv/bin/python bench/compose.py``); prints
figures, asserts nothing. Each size runs in a fresh subprocess so peak RSS is
that run's own. Recipients are generated CSV files across the three segments,
in the three languages, with 5% of addresses in two segments.
"""

from __future__ import annotations

import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1_000, 10_000, 100_000)
SEGMENTS = ("states", "international-organizations", "civil-society")


def generate(directory: Path, count: int) -> None:
    """``count`` distinct addresses spread over three segment files."""
    directory.mkdir(parents=True, exist_ok=True)
    writers = {}
    handles = []
    for segment in SEGMENTS:
        handle = (directory / f"{segment}.csv").open("w", newline="", encoding="utf-8")
        handles.append(handle)
        writers[segment] = csv.writer(handle)
        writers[segment].writerow(["email", "name", "organization", "country", "language"])
    for index in range(count):
        segment = SEGMENTS[index % 3]
        row = [
            f"reader{index}@example.org",
            f"Reader Número {index}",
            "Organization",
            "Country",
            ("en", "fr", "es")[index % 3],
        ]
        writers[segment].writerow(row)
        if index % 20 == 0:  # also in the next segment: one message all the same
            writers[SEGMENTS[(index + 1) % 3]].writerow(row)
    for handle in handles:
        handle.close()


def run_one(count: int) -> dict[str, float]:
    """Compose ``count`` recipients into an mbox in this process; report figures."""
    sys.path.insert(0, str(ROOT))
    from mailer import pipeline
    from mailer.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        recipients = Path(tmp) / "recipients"
        generate(recipients, count)
        settings = Settings(_env_file=None, MAILER_FROM="ISU <news@example.org>")  # type: ignore[call-arg]
        start = time.perf_counter()
        sample = ROOT / "examples" / "bulletins" / "2017-03"
        job = pipeline.prepare(sample, settings, recipients_dir=recipients)
        loaded = time.perf_counter()
        result = pipeline.preview(job, Path(tmp) / "out")
        done = time.perf_counter()
        size = result.mbox.stat().st_size
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "recipients": count,
        "messages": result.messages,
        "load_s": loaded - start,
        "compose_write_s": done - loaded,
        "total_s": done - start,
        "msgs_per_s": result.messages / (done - start),
        "compose_msgs_per_s": result.messages / (done - loaded),
        "avg_kb": size / result.messages / 1024,
        "peak_rss_mb": rss_mb,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(run_one(int(sys.argv[2]))))
        return
    sizes = [int(a) for a in sys.argv[1:]] or list(SIZES)
    print(
        f"{'recipients':>10} {'total s':>8} {'msgs/s':>8} {'compose/s':>10} "
        f"{'load s':>7} {'KB/msg':>7} {'peak RSS MB':>12}"
    )
    rows = []
    for count in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(count)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out)
        rows.append(row)
        print(
            f"{row['recipients']:>10} {row['total_s']:>8.2f} {row['msgs_per_s']:>8.0f} "
            f"{row['compose_msgs_per_s']:>10.0f} {row['load_s']:>7.2f} {row['avg_kb']:>7.1f} "
            f"{row['peak_rss_mb']:>12.1f}"
        )
    if len(rows) > 1:
        print(
            f"RSS growth from {rows[0]['recipients']} to {rows[-1]['recipients']}: "
            f"{rows[-1]['peak_rss_mb'] - rows[0]['peak_rss_mb']:.1f} MB"
        )
    shutil.rmtree(ROOT / "bench" / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
