"""Commands import only the stages they use: `mailer --help` loads none of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.system  # mailer started in subprocesses

HEAVY = (
    "premailer",
    "cssutils",
    "lxml",
    "aiosmtplib",
    "cryptography",
    "email_validator",
    "flufl.bounce",
    "dkim",
    "markdown_it",
    "babel",
    "jinja2",
    "matplotlib",
)


def _imported(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mailer", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_help_imports_no_pipeline_stage() -> None:
    modules = _imported("--help")
    assert "mailer.cli" in modules  # the measurement itself works
    loaded = {m for m in modules for heavy in HEAVY if m == heavy or m.startswith(heavy + ".")}
    assert not loaded, sorted(loaded)


def test_the_endpoint_loads_no_compose_stage_module() -> None:
    """`mailer serve` imported compose (premailer, lxml, cssutils, cryptography) only to
    find the templates: 0.32 s at every start of the endpoint."""
    probe = (
        "import sys, mailer.serve\n"
        "heavy = {'mailer.compose', 'premailer', 'lxml', 'cssutils', 'aiosmtplib'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
