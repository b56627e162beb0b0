"""One exception hierarchy; the CLI turns each into a message and an exit code.

Every error a person can fix carries where to fix it (file, line, field), so the
message can say it in one paragraph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # delivery imports aiosmtplib: errors stay light
    from mailer.recorder import Report


class MailerError(Exception):
    """Root of every error mailer raises on purpose."""

    exit_code = 2

    def describe(self) -> str:
        """The one-paragraph message shown to staff."""
        return str(self)


class InputError(MailerError):
    """Bad input a person must fix: names the file, the line and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = Path(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(self.describe())

    def location(self) -> str:
        """``path, line N, field 'x'``: as much of the place as is known."""
        parts = []
        if self.file is not None:
            parts.append(str(self.file))
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)

    def describe(self) -> str:
        """The one-paragraph message shown to staff."""
        where = self.location()
        return f"{where}: {self.message}" if where else self.message


class ContentError(InputError):
    """A bulletin, one of its items, or a template is wrong."""


class RecipientError(InputError):
    """A recipients or suppressions CSV row is wrong."""


class ConfigError(InputError):
    """A setting is missing or wrong; ``field`` names the environment variable."""


class DeliveryError(MailerError):
    """Sending failed in a way that stops the run (authentication, TLS, refused relay).

    ``configuration`` marks failures a setting must fix (password, TLS, sender,
    the relay's policy) before anything was sent: exit code 2; otherwise (some
    messages went out, or the relay refuses connections) exit code 1.
    """

    def __init__(
        self, message: str, *, configuration: bool = False, code: int | None = None
    ) -> None:
        self.exit_code = 2 if configuration else 1
        self.code = code  # the SMTP reply code behind it, when there is one
        self.report: Report | None = None  # what the run did before it stopped
        super().__init__(message)


class LedgerLocked(MailerError):
    """Another run holds this issue's ledger."""


class LedgerDamaged(MailerError):
    """A line in the middle of a ledger is not a record."""


class LedgerGone(MailerError):
    """The ledger file was deleted or replaced while a run was writing to it."""

    exit_code = 1  # the run may have sent some messages before it noticed
