"""Load the segmented recipient lists: validated, deduplicated, suppressions applied.

``recipients/<segment>.csv`` has a header row with ``email`` and optionally
``name``, ``organization``, ``country``, ``language`` and any extra columns.
``recipients/suppressions.csv`` lists addresses never to mail.

Loading is two passes so that memory stays flat for very large lists: the first
pass validates every row (nothing is sent if one is bad) and remembers, per
address, only which segments it is in; the second pass, run lazily while
messages are composed, parses the rows again and yields one :class:`Recipient`
per address, at its first row in segment order. Both passes parse the same text,
read once (``spreadsheet.py``): the lists a send mails are exactly the lists it
validated, whatever happens to the files meanwhile.

Addresses are compared without regard to case (``Liaison@Example.org`` and
``liaison@example.org`` are one reader, as they are at every real mailbox
provider); the first row's spelling is the one mailed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mailer import suppressions
from mailer.bulletin import DEFAULT_LANGUAGE, LANGUAGES
from mailer.errors import RecipientError
from mailer.spreadsheet import Sheet, read_sheet
from mailer.suppressions import SUPPRESSIONS, normalize_address

_KNOWN_COLUMNS = ("email", "name", "organization", "country", "language")
# A field longer than this is an export gone wrong (a whole row in one cell), and a
# display name this long would make header lines beyond RFC 5322's 998 characters.
MAX_FIELD = 200


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _has_control(value: str) -> bool:
    return _CONTROL.search(value) is not None


def _check_row(row: dict[str, str], path: Path, line: int) -> tuple[str, str, str]:
    """Validate one row; returns (address, name, language) or raises a located error."""
    for column, value in row.items():
        if _has_control(value):
            raise RecipientError(
                "contains a line break or control character.", file=path, line=line, field=column
            )
        if len(value) > MAX_FIELD:
            raise RecipientError(
                f"is {len(value)} characters long; at most {MAX_FIELD} are accepted.",
                file=path,
                line=line,
                field=column,
            )
    try:
        address = normalize_address(row.get("email", ""))
    except ValueError as exc:
        raise RecipientError(f"{exc}.", file=path, line=line, field="email") from None
    language = row.get("language", "").lower() or DEFAULT_LANGUAGE
    if language not in LANGUAGES:
        raise RecipientError(
            f"unknown language '{language}'; use one of {', '.join(LANGUAGES)}.",
            file=path,
            line=line,
            field="language",
        )
    return address, row.get("name", ""), language


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
    _sheets: dict[str, Sheet] = field(default_factory=dict, repr=False)

    def path(self, segment: str) -> Path:
        return self.directory / f"{segment}.csv"

    def segments_of(self, mask: int) -> tuple[str, ...]:
        return tuple(s for i, s in enumerate(self.segments) if mask & (1 << i))

    def __len__(self) -> int:
        return self.count

    def variants(self) -> set[tuple[tuple[str, ...], str]]:
        """Each distinct (segments, language) of the list, from pass one alone (no row
        is re-read): the language packed per address is its first row's, the one mailed."""
        return {
            (self.segments_of(packed & _MASK), LANGUAGES[(packed >> 64) & 3])
            for packed in self._masks.values()
        }

    def memberships(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Each address (lower case) with its segments, without re-reading any row."""
        for key, packed in self._masks.items():
            yield key, self.segments_of(packed & _MASK)

    def __iter__(self) -> Iterator[Recipient]:
        """Yield each address once, at its first row, knowing all its segments."""
        for segment in self.segments:
            firsts = self._first_rows[segment]
            for index, (_, row) in enumerate(self._sheets[segment].rows()):
                address = firsts[index]
                if address is None:
                    continue
                extra = {k: v for k, v in row.items() if k not in _KNOWN_COLUMNS}
                yield Recipient(
                    email=address,
                    name=row.get("name", ""),
                    organization=row.get("organization", ""),
                    country=row.get("country", ""),
                    language=row.get("language", "").lower() or DEFAULT_LANGUAGE,
                    segments=self.segments_of(self._masks[address.lower()] & _MASK),
                    fields=MappingProxyType(extra),
                )


def _keep_only(result: RecipientList, segments: set[str]) -> None:
    """Drop the readers in none of ``segments``; the others keep every segment of theirs."""
    keep = sum(1 << bit for bit, s in enumerate(result.segments) if s in segments)
    result._masks = {k: v for k, v in result._masks.items() if v & keep}
    for column in result._first_rows.values():
        for index, address in enumerate(column):
            if address is not None and address.lower() not in result._masks:
                column[index] = None
    for bit, segment in enumerate(result.segments):
        result.per_segment[segment] = sum(1 for v in result._masks.values() if v & (1 << bit))


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
    directory: Path,
    segments: Iterable[str],
    *,
    skip_invalid: bool = False,
    only: Iterable[str] | None = None,
) -> RecipientList:
    """Validate every row of ``segments`` (in that order: first row wins on conflicts).

    ``only`` keeps the readers in any of those segments, each still with all the
    segments they belong to (so with all the items a full send gives them).
    """
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
    suppressed = suppressions.load(directory)
    result = RecipientList(directory=directory, segments=wanted)
    suppressed_seen: set[str] = set()
    problems: list[Problem] = []
    for bit, segment in enumerate(wanted):
        path = result.path(segment)
        sheet = result._sheets[segment] = read_sheet(path)
        column: list[str | None] = []
        result._first_rows[segment] = column
        in_segment: set[str] = set()
        for line, row in sheet.rows():
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
    if only is not None and set(only) != set(wanted):
        _keep_only(result, {s for s in only})
    result.skipped = problems
    result.count = len(result._masks)
    result.suppressed = len(suppressed_seen)
    return result
