"""Benchmark: building the web archive of many issues.

Run on demand (``.venv/bin/python bench/publish.py [N …]``, default 50 and 200);
prints the build time of N generated issues (copies of the sample, four items,
three languages each), asserts nothing. The goal is under 10 s for 200 issues,
growing linearly.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.publish import publish  # noqa: E402  (after the path is set)
from mailer.settings import Settings  # noqa: E402


def generate(root: Path, count: int) -> None:
    """``count`` issues, one a week from 2010, each a copy of the sample."""
    sample = ROOT / "examples" / "bulletins" / "2017-03"
    for index in range(count):
        issue = f"issue-{index:04d}"
        folder = root / issue
        shutil.copytree(sample, folder)
        day = date(2010, 1, 4) + timedelta(weeks=index)
        yaml = (folder / "bulletin.yaml").read_text(encoding="utf-8")
        yaml = yaml.replace("id: 2017-03", f"id: {issue}")
        yaml = yaml.replace("date: 2017-03-27", f"date: {day.isoformat()}")
        yaml = yaml.replace(
            "send_at: 2017-03-28T09:00:00+02:00", f"send_at: {day.isoformat()}T09:00:00+01:00"
        )
        (folder / "bulletin.yaml").write_text(yaml, encoding="utf-8")


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [50, 200]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        MAILER_FROM="ISU-CCM <newsletter@isu.example.org>",
        archive_url="https://isu.example.org/bulletin",
        recipients_dir=ROOT / "examples" / "recipients",
    )
    for count in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "bulletins"
            generate(root, count)
            started = time.perf_counter()
            result = publish(root, Path(tmp) / "site", settings, datetime.now(UTC))
            seconds = time.perf_counter() - started
        print(
            f"{count:4d} issues: {seconds:5.2f} s ({len(result.files):,} files, "
            f"{seconds / count * 1000:.0f} ms an issue)"
        )


if __name__ == "__main__":
    main()
