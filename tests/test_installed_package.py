"""The package works once installed: a wheel built from the repository runs the demo from
an empty folder, its templates and catalogs inside it (they used to live in the checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, SAMPLE, SAMPLE_RECIPIENTS

pytestmark = pytest.mark.system  # a wheel built and installed into a fresh venv


def test_a_wheel_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist), str(ROOT))
    wheel = next(dist.glob("mailer-*.whl"))
    target = tmp_path / "installed"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    assert (target / "mailer" / "templates" / "bulletin.html.j2").is_file()
    assert (
        target / "mailer" / "templates" / "locale" / "fr" / "LC_MESSAGES" / "messages.po"
    ).is_file()
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    # The installed copy first; its dependencies from this environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["PYTHONPATH"] = str(target)
    where = subprocess.run(
        [sys.executable, "-c", "import mailer; print(mailer.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailer",
            "send",
            str(SAMPLE),
            "--dry-run",
            "--recipients",
            str(SAMPLE_RECIPIENTS),
            "--out",
            str(tmp_path / "previews"),
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert (tmp_path / "previews" / "2017-03.mbox").stat().st_size > 100_000
    assert not list(empty.iterdir())  # nothing written where it ran


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", args[0], "--quiet", *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
