"""Shared fixtures: the sample bulletin, a dry run of it, and external judges."""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import shutil
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailer import pipeline
from mailer.compose import OutgoingMessage
from mailer.settings import Settings

from .smtp_server import Server

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "bulletins" / "2017-03"
SAMPLE_RECIPIENTS = ROOT / "examples" / "recipients"
UNSUBSCRIBE_SECRET = "test-unsubscribe-key"


def require_tool(name: str) -> str:
    """Path of an external judge; skip when missing, fail when CI requires it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")  # dovecot
    if found is None:
        if os.environ.get("MAILER_REQUIRE_EXTERNAL") == "1":
            pytest.fail(f"{name} is required (MAILER_REQUIRE_EXTERNAL=1) but not installed")
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture
def server() -> Iterator[Server]:
    """A well-behaved SMTP server on 127.0.0.1 (see smtp_server.py for the others)."""
    with Server() as running:
        yield running


@pytest.fixture(scope="session", autouse=True)
def _sample_content_untouched() -> Iterator[None]:
    """No test may change the bundled bulletin or lists (they are the product's sample)."""

    def snapshot() -> dict[Path, bytes]:
        return {
            p: p.read_bytes()
            for d in (SAMPLE, SAMPLE_RECIPIENTS)
            for p in d.rglob("*")
            if p.is_file()
        }

    before = snapshot()
    yield
    assert snapshot() == before, "a test modified the sample bulletin or recipients"


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read a developer's MAILER_* variables."""
    for name in list(os.environ):
        if name.startswith("MAILER_") and name != "MAILER_REQUIRE_EXTERNAL":
            monkeypatch.delenv(name)


def make_settings(**values: Any) -> Settings:
    """Settings from explicit values only (no .env, no environment)."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def copy_sample(tmp_path: Path) -> Callable[[], tuple[Path, Path]]:
    """A writable copy of the sample bulletin and recipients, for tests that break them."""

    def make() -> tuple[Path, Path]:
        bulletin = tmp_path / "bulletins" / "2017-03"
        recipients = tmp_path / "recipients"
        shutil.copytree(SAMPLE, bulletin)
        shutil.copytree(SAMPLE_RECIPIENTS, recipients)
        return bulletin, recipients

    return make


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in a copied file, which must contain it."""
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def parse(data: bytes) -> EmailMessage:
    """Message bytes parsed back the way a mail client would."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def compose_sample(**settings: object) -> list[OutgoingMessage]:
    """Every message of the sample bulletin (small list: fine to hold)."""
    job = pipeline.prepare(SAMPLE, make_settings(**settings), recipients_dir=SAMPLE_RECIPIENTS)
    return list(job.messages())


# What a real send of the sample is configured with (DKIM aside).
SEND_SETTINGS: dict[str, object] = {
    "MAILER_FROM": "ISU-CCM <newsletter@isu.example.org>",
    "unsubscribe_url": "https://isu.example.org/unsubscribe",
    "unsubscribe_mailto": "unsubscribe@isu.example.org",
    "unsubscribe_secret": UNSUBSCRIBE_SECRET,
    "reply_to": "ISU-CCM <isu@example.org>",
}


@pytest.fixture(scope="session")
def sample_messages() -> list[OutgoingMessage]:
    return compose_sample(**SEND_SETTINGS)


def by_address(messages: list[OutgoingMessage]) -> dict[str, EmailMessage]:
    return {m.recipient.email: parse(m.data) for m in messages}


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


@pytest.fixture
def dry_run_files(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Run the sample's dry run into tmp_path; yields (mbox, page)."""
    job = pipeline.prepare(SAMPLE, make_settings(), recipients_dir=SAMPLE_RECIPIENTS)
    result = pipeline.preview(job, tmp_path / "previews")
    yield result.mbox, result.page


def mbox_messages(path: Path) -> list[EmailMessage]:
    box = mailbox.mbox(str(path))
    return [parse(box.get_bytes(key)) for key in box.iterkeys()]
