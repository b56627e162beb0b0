"""Load the segmented recipient lists: validated, deduplicated, suppressions applied.

``recipients/<segment>.csv`` has a header row with ``email`` and optionally
``name``, ``organization``, ``country``, ``language`` and any extra columns.
``recipients/suppressions.csv`` lists addresses never to mail.

Loading is two passes so that memory stays flat for very large lists: the first
pass validates every row (nothing is sent if one is bad) and remembers, per
address, only which segments it is in; the second pass, run lazily while
messages are composed, re-reads the files and yields one :class:`Recipient` per
address, at its first row in segment order.

Addresses are compared without regard to case (``Liaison@Example.org`` and
``liaison@example.org`` are one reader, as they are at every real mailbox
provider); the first row's spelling is the one mailed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from email_validator import EmailNotValidError, validate_email

from mailer.bulletin import DEFAULT_LANGUAGE, LANGUAGES
from mailer.errors import RecipientError

SUPPRESSIONS = "suppressions.csv"
_KNOWN_COLUMNS = ("email", "name", "organization", "country", "language")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One address to mail, with every segment it belongs to."""

    email: str
    name: str
    organization: str
    country: str
    language: str
    segments: tuple[str, ...]
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Problem:
    """A bad or notable row, located for staff."""

    file: Path
    line: int
    field: str | None
    message: str

    def error(self) -> RecipientError:
        return RecipientError(self.message, file=self.file, line=self.line, field=self.field)

    def describe(self) -> str:
        return self.error().describe()


class BadRows(RecipientError):
    """Several rows are wrong; all of them are listed, nothing is sent."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field)

    def describe(self) -> str:
        if len(getattr(self, "problems", ())) <= 1:
            return super().describe()
        rest = "\n".join(f"  - {p.describe()}" for p in self.problems[1:])
        return (
            f"{super().describe()}\n{len(self.problems) - 1} more bad row(s):\n{rest}\n"
            "Fix them, or pass --skip-invalid to leave those rows out."
        )


def available_segments(directory: Path) -> tuple[str, ...]:
    """The segments of a recipients folder: the stems of its CSV files."""
    if not directory.is_dir():
        raise RecipientError(
            "no such recipients folder.", file=directory, field="MAILER_RECIPIENTS_DIR"
        )
    return tuple(sorted(p.stem for p in directory.glob("*.csv") if p.name != SUPPRESSIONS))


def _clean(value: str | None) -> str:
    return (value or "").strip()


def _has_control(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def _normalize(address: str) -> str:
    """Validated, normalized address; raises ValueError with a reason staff understand."""
    if not address:
        raise ValueError("the address is empty")
    try:
        return validate_email(address, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc).rstrip(".")) from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Rows of a CSV with the line each starts on (header is line 1)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "email" not in [_clean(f) for f in reader.fieldnames]:
                raise RecipientError("the header row has no 'email' column.", file=path, line=1)
            reader.fieldnames = [_clean(f).lower() for f in reader.fieldnames]
            line = reader.line_num + 1
            for row in reader:
                yield line, row
                line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise RecipientError(f"not UTF-8 text ({exc.reason}).", file=path) from None
    except csv.Error as exc:
        raise RecipientError(f"not a readable CSV file ({exc}).", file=path) from None


def load_suppressions(directory: Path) -> frozenset[str]:
    """Normalized addresses never to mail; the file is optional."""
    path = directory / SUPPRESSIONS
    if not path.exists():
        return frozenset()
    suppressed = set()
    for line, row in _rows(path):
        try:
            suppressed.add(_normalize(_clean(row.get("email"))).lower())
        except ValueError as exc:
            raise RecipientError(f"{exc}.", file=path, line=line, field="email") from None
    return frozenset(suppressed)


def _check_row(row: dict[str, str | None], path: Path, line: int) -> tuple[str, str, str]:
    """Validate one row; returns (address, name, language) or raises a located error."""
    for column, raw in row.items():
        if column is None or raw is None:
            raise RecipientError(
                "the row has a different number of columns than the header.",
                file=path,
                line=line,
            )
        if _has_control(_clean(raw)):
            raise RecipientError(
                "contains a line break or control character.", file=path, line=line, field=column
            )
    try:
        address = _normalize(_clean(row.get("email")))
    except ValueError as exc:
        raise RecipientError(f"{exc}.", file=path, line=line, field="email") from None
    language = _clean(row.get("language")).lower() or DEFAULT_LANGUAGE
    if language not in LANGUAGES:
        raise RecipientError(
            f"unknown language '{language}'; use one of {', '.join(LANGUAGES)}.",
            file=path,
            line=line,
            field="language",
        )
    return address, _clean(row.get("name")), language


@dataclass
class RecipientList:
    """The validated recipients of some segments, iterated lazily, once per address.

    Holds only, per address, which segments it is in; rows are re-read on iteration.
    """

    directory: Path
    segments: tuple[str, ...]
    count: int = 0
    per_segment: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    _masks: dict[str, int] = field(default_factory=dict, repr=False)
    _first_rows: dict[str, list[str | None]] = field(default_factory=dict, repr=False)
    _stamps: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def path(self, segment: str) -> Path:
        return self.directory / f"{segment}.csv"

    def segments_of(self, mask: int) -> tuple[str, ...]:
        return tuple(s for i, s in enumerate(self.segments) if mask & (1 << i))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Recipient]:
        """Yield each address once, at its first row, knowing all its segments."""
        for segment in self.segments:
            path = self.path(segment)
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) != self._stamps[segment]:
                raise RecipientError(
                    "the file changed while the bulletin was being sent; run again.", file=path
                )
            firsts = self._first_rows[segment]
            for index, (_, row) in enumerate(_rows(path)):
                address = firsts[index]
                if address is None:
                    continue
                extra = {k: _clean(v) for k, v in row.items() if k not in _KNOWN_COLUMNS and k}
                yield Recipient(
                    email=address,
                    name=_clean(row.get("name")),
                    organization=_clean(row.get("organization")),
                    country=_clean(row.get("country")),
                    language=_clean(row.get("language")).lower() or DEFAULT_LANGUAGE,
                    segments=self.segments_of(self._masks[address.lower()] & _MASK),
                    fields=MappingProxyType(extra),
                )


# Per address, pass one keeps a single int: the segments it is in (bits 0-31), the
# line of its first row (bits 32-63), that row's language (64-65) and a hash of its
# name (66+), to warn about conflicting rows. One int an address keeps a 100,000
# recipient list within a few megabytes.
_MASK = (1 << 32) - 1


def _pack(mask: int, line: int, name: str, language: str) -> int:
    return mask | (line << 32) | (LANGUAGES.index(language) << 64) | ((hash(name) & _MASK) << 66)


def _conflict(packed: int, name: str, language: str) -> str | None:
    """Which field of a later row disagrees with the first row (a blank name never does)."""
    if name and (hash(name) & _MASK) != packed >> 66:
        return "name"
    if LANGUAGES.index(language) != (packed >> 64) & 3:
        return "language"
    return None


def _first_row(packed: int, segments: tuple[str, ...]) -> tuple[str, int]:
    """The segment and line of an address's first row (its lowest segment bit)."""
    mask = packed & _MASK
    return segments[(mask & -mask).bit_length() - 1], (packed >> 32) & _MASK


def load_recipients(
    directory: Path, segments: Iterable[str], *, skip_invalid: bool = False
) -> RecipientList:
    """Validate every row of ``segments`` (in that order: first row wins on conflicts)."""
    wanted = tuple(segments)
    available = available_segments(directory)
    for segment in wanted:
        if segment not in available:
            raise RecipientError(
                f"no recipients file for segment '{segment}'.",
                file=directory / f"{segment}.csv",
            )
    if len(wanted) > 32:
        raise RecipientError("more than 32 segments in one send.", file=directory)
    suppressed = load_suppressions(directory)
    result = RecipientList(directory=directory, segments=wanted)
    suppressed_seen: set[str] = set()
    problems: list[Problem] = []
    for bit, segment in enumerate(wanted):
        path = result.path(segment)
        stat = path.stat()
        result._stamps[segment] = (stat.st_size, stat.st_mtime_ns)
        column: list[str | None] = []
        result._first_rows[segment] = column
        in_segment: set[str] = set()
        for line, row in _rows(path):
            column.append(None)
            try:
                address, name, language = _check_row(row, path, line)
            except RecipientError as exc:
                problems.append(Problem(path, line, exc.field, exc.message))
                continue
            key = address.lower()
            if key in suppressed:
                suppressed_seen.add(key)
                continue
            in_segment.add(key)
            packed = result._masks.get(key)
            if packed is None:
                result._masks[key] = _pack(1 << bit, line, name, language)
                column[-1] = key if key == address else address
                continue
            result._masks[key] = packed | (1 << bit)
            conflict = _conflict(packed, name, language)
            if conflict:
                first_segment, first_line = _first_row(packed, wanted)
                result.warnings.append(
                    Problem(
                        path,
                        line,
                        conflict,
                        f"{address} also appears at {first_segment}.csv line {first_line} "
                        f"with another {conflict}; the first row is used.",
                    )
                )
        result.per_segment[segment] = len(in_segment)
    if problems and not skip_invalid:
        raise BadRows(problems)
    result.skipped = problems
    result.count = len(result._masks)
    result.suppressed = len(suppressed_seen)
    return result
