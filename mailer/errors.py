"""One exception hierarchy; the CLI turns each into a message and an exit code.

Every error a person can fix carries where to fix it (file, line, field), so the
message can say it in one paragraph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


class ManyProblems(MailerError):
    """Every problem a load found, so staff fix them all after one run (exit 2)."""

    def __init__(self, problems: list[InputError]) -> None:
        self.problems = problems
        super().__init__(self.describe())

    def describe(self) -> str:
        lines = [f"{len(self.problems)} problems, in file order:"]
        lines.extend(f"- {problem.describe()}" for problem in self.problems)
        return "\n".join(lines)


class Problems:
    """Collects the problems of a load instead of stopping at the first: each check
    runs under :meth:`catch`; :meth:`check` raises them all, ordered by file (in the
    order they were read) and line."""

    def __init__(self) -> None:
        self.found: list[InputError] = []

    @contextmanager
    def catch(self) -> Iterator[None]:
        try:
            yield
        except ManyProblems as many:
            self.found.extend(many.problems)
        except InputError as problem:
            self.found.append(problem)

    def __bool__(self) -> bool:
        return bool(self.found)

    def check(self) -> None:
        """Raise what was found: one problem as itself, several as :class:`ManyProblems`."""
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            files: dict[str, int] = {}
            for problem in self.found:
                files.setdefault(str(problem.file), len(files))
            ordered = sorted(
                self.found, key=lambda p: (files[str(p.file)], p.line if p.line else 0)
            )
            raise ManyProblems(list({p.describe(): p for p in ordered}.values()))


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
