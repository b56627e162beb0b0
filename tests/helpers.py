"""Helpers shared by the test modules (a test module never imports another's)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from mailer import pipeline
from mailer.cli import app
from mailer.delivery import Report, RetryPolicy
from mailer.settings import Settings
from mailer.verp import message_id, tag

from .conftest import ROOT, SAMPLE, SAMPLE_RECIPIENTS, html_of, make_settings
from .smtp_server import Server

FAST = RetryPolicy(attempts=3, base=0.05, factor=2, jitter=0.1)


def write_list(directory: Path, count: int) -> Path:
    """``count`` generated recipients, spread over the three segments."""
    directory.mkdir(parents=True, exist_ok=True)
    segments = ("states", "international-organizations", "civil-society")
    rows: dict[str, list[str]] = {s: ["email,name,language"] for s in segments}
    for index in range(count):
        language = ("en", "fr", "es")[index % 3]
        rows[segments[index % 3]].append(f"reader{index}@example.org,Reader {index},{language}")
    for segment, lines in rows.items():
        (directory / f"{segment}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def settings_for(port: int, tmp_path: Path, **extra: object) -> Settings:
    """Settings for a test server, with a private copy of the sample recipients
    (a send may add to suppressions.csv)."""
    recipients = tmp_path / "recipients"
    if not recipients.exists():
        shutil.copytree(SAMPLE_RECIPIENTS, recipients)
    values: dict[str, object] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_timeout": 5,
        "MAILER_FROM": "ISU-CCM <newsletter@isu.example.org>",
        "unsubscribe_mailto": "unsubscribe@isu.example.org",
        "ledger_dir": tmp_path / "ledger",
        "recipients_dir": recipients,
        "max_connections": 2,
    }
    values.update(extra)
    return make_settings(**values)


def send_cli(recipients: Path, env: dict[str, str], *extra: str) -> Result:
    """``mailer send`` of the sample bulletin to ``recipients``, as CI runs it (--yes)."""
    args = ["send", str(SAMPLE), "--recipients", str(recipients), "--yes", *extra]
    return CliRunner().invoke(app, args, env=env)


def cli_env(port: int, ledger_dir: Path, **extra: str) -> dict[str, str]:
    """MAILER_* variables for running the command line against a test server."""
    return {
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(port),
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_FROM": "ISU-CCM <newsletter@isu.example.org>",
        "MAILER_UNSUBSCRIBE_MAILTO": "unsubscribe@isu.example.org",
        "MAILER_LEDGER_DIR": str(ledger_dir),
        "MAILER_RETRY_DELAY": "0.05",  # a temporary failure is retried within 0.05 s, not 2
        **extra,
    }


def send(settings: Settings, recipients: Path | None = None, policy: RetryPolicy = FAST) -> Report:
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=recipients, dry_run=False)
    with pipeline.open_ledger(job, settings) as ledger:
        return pipeline.deliver(job, settings, ledger, ledger.state(), policy=policy)


Sample = Callable[[], tuple[Path, Path]]  # the copy_sample fixture: (bulletin, recipients)


def publish_sample(out: Path, now: str, env: dict[str, str] | None = None) -> Path:
    """``mailer publish`` of the sample bulletin into ``out``, as of ``now``; ``out``."""
    args = ["publish", "--bulletins", str(SAMPLE.parent), "--out", str(out)]
    args += ["--recipients", str(SAMPLE_RECIPIENTS), "--now", now]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return out


# -- bounces ------------------------------------------------------------------------------

BOUNCES = Path(__file__).parent / "fixtures" / "bounces"
BOUNCE_ADDRESS = "bounces@isu.example.org"
BOUNCE_SECRET = "test-bounce-key"
KEY = BOUNCE_SECRET.encode()
_PLACEHOLDER = re.compile(r"\{\{(verp-tag|message-id):([^}]+)\}\}")


def bounce_bytes(name: str, issue: str = "2017-03") -> bytes:
    """A bounce fixture with the keyed VERP tags and Message-IDs a real send would carry."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) == "verp-tag":
            return tag(KEY, issue, match.group(2))
        return message_id(KEY, issue, match.group(2), "isu.example.org")

    return _PLACEHOLDER.sub(fill, (BOUNCES / name).read_text(encoding="utf-8")).encode()


def sent_with_verp(server: Server, tmp_path: Path) -> Settings:
    """The sample sent through ``server`` with VERP; the settings that sent it."""
    settings = settings_for(
        server.port, tmp_path, bounce_address=BOUNCE_ADDRESS, bounce_secret=BOUNCE_SECRET
    )
    job = pipeline.prepare(SAMPLE, settings, dry_run=False)
    with pipeline.open_ledger(job, settings) as ledger:
        pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    return settings


# -- browsers -------------------------------------------------------------------------------

# Debian's Chromium under Playwright, offline (never `playwright install`).
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(
    os.environ.get(
        "MAILER_AXE", ROOT / ".ci" / "tools" / "node_modules" / "axe-core" / "axe.min.js"
    )
)
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def require_axe() -> None:
    """axe-core from npm (.ci/run installs it): skip when missing, fail when required."""
    if not AXE.exists():
        if os.environ.get("MAILER_REQUIRE_EXTERNAL") == "1":
            pytest.fail(f"axe-core is required but {AXE} is missing (run .ci/run)")
        pytest.skip("axe-core (npm) is not installed")


def axe_violations(page: Any, rules: dict[str, Any] | None = None) -> list[str]:
    """What axe-core finds on the page now loaded in Chromium (``id: html``)."""
    page.add_script_tag(path=str(AXE))
    options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "rules": rules or {}}
    found: list[str] = page.evaluate(
        "async (options) => (await axe.run(document, options)).violations"
        ".map(v => `${v.id}: ${v.nodes[0].html.slice(0, 120)}`)",
        options,
    )
    return found


def with_inline_images(message: Any) -> str:
    """The HTML as a client shows it: cid: parts resolved to the embedded images."""
    body = html_of(message)
    for part in message.walk():
        if part.get_content_maintype() == "image":
            cid = part["Content-ID"].strip("<>")
            data = base64.b64encode(part.get_content()).decode()
            body = body.replace(f"cid:{cid}", f"data:{part.get_content_type()};base64,{data}")
    return body


def drip(handler: Any, pause: float = 0.2, limit: int = 50) -> None:
    """Answer 200 and then a byte every ``pause`` seconds (bounded by ``limit`` bytes): a
    server whose answer trickles in forever, for the tests of answer deadlines."""
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(limit):
        try:
            handler.wfile.write(b" ")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(pause)
