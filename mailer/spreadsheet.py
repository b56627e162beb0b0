"""Read the CSV files staff export from a spreadsheet: recipients and suppressions.

A file is read once, whole, into memory (a 100,000-row list is a few megabytes
of text), and every later pass parses that same text: a file saved again while
a send runs can never pair one reading's address with another's name.

What spreadsheet exports do, and what happens to it here:

- a byte-order mark (Excel's "CSV UTF-8"): ignored;
- ``;`` or tab between columns (Excel in a French or Spanish locale): accepted
  when the header row has no comma, so the header decides;
- empty rows and empty trailing columns (``,,,,``, Excel's formatted-but-empty
  cells): ignored;
- column names differing only in case or spaces: one column; the same name
  twice: refused (which one would be the address?);
- a legacy encoding ("CSV (Windows)", Latin-1) or an ``.xlsx`` renamed to
  ``.csv``: refused, saying how to export UTF-8 CSV instead.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailer.errors import RecipientError

EXPORT_ADVICE = "In Excel or LibreOffice use File › Save As › 'CSV UTF-8 (comma delimited)'."


@dataclass(frozen=True)
class Sheet:
    """One CSV file's text as read once, with its delimiter and normalized header."""

    path: Path
    text: str
    delimiter: str
    header: tuple[str, ...]

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """Each non-empty row with the line it starts on (the header is line 1).

        Values are stripped; a row with more values than the header raises a
        located error (its extra values would otherwise vanish).
        """
        reader = csv.reader(io.StringIO(self.text, newline=""), delimiter=self.delimiter)
        line = 1
        try:
            next(reader, None)
            line = reader.line_num + 1
            for values in reader:
                cleaned = [v.strip() for v in values]
                if any(cleaned):
                    yield line, self._row(cleaned, line)
                line = reader.line_num + 1
        except csv.Error as exc:
            raise RecipientError(
                f"not a readable CSV row ({exc}).", file=self.path, line=line
            ) from None

    def _row(self, values: list[str], line: int) -> dict[str, str]:
        width = len(self.header)
        extra = values[width:]
        if any(extra):
            raise RecipientError(
                f"the row has {len(values)} values but the header names {width} columns "
                "(a comma inside a value needs quotes).",
                file=self.path,
                line=line,
            )
        row = dict(zip(self.header, values + [""] * (width - len(values)), strict=True))
        row.pop("", None)  # an unnamed column (Excel's empty trailing cells)
        return row


def read_sheet(path: Path, *, required: str = "email") -> Sheet:
    """Read and check one CSV export; every problem names the file and says what to do."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipientError(f"cannot be read ({exc.strerror}).", file=path) from None
    if data.startswith(b"PK\x03\x04"):
        raise RecipientError(
            f"this is an Excel workbook (.xlsx) named .csv, not CSV text. {EXPORT_ADVICE}",
            file=path,
        )
    if b"\0" in data:
        raise RecipientError(
            f"this is not a text file (it holds binary data). {EXPORT_ADVICE}", file=path
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipientError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02X}): the file was probably saved as "
            f"'CSV (Windows)' or in a legacy encoding. {EXPORT_ADVICE}",
            file=path,
            line=line,
        ) from None
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = _delimiter(first)
    raw_header = next(csv.reader([first], delimiter=delimiter), [])
    header = tuple(name.strip().lower() for name in raw_header)
    _check_header(path, header, required, delimiter)
    return Sheet(path, text, delimiter, header)


def _delimiter(header_line: str) -> str:
    """Comma, unless the header has none and uses ``;`` or a tab (locale exports)."""
    if "," not in header_line:
        for candidate in (";", "\t"):
            if candidate in header_line:
                return candidate
    return ","


def _check_header(path: Path, header: tuple[str, ...], required: str, delimiter: str) -> None:
    if required not in header:
        hint = ""
        if len(header) == 1 and any(c in header[0] for c in ";\t|"):
            hint = " The columns seem to be separated by something else than commas."
        raise RecipientError(f"the header row has no '{required}' column.{hint}", file=path, line=1)
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise RecipientError(
                f"the column '{name}' appears twice in the header row (names are compared "
                "without regard to case); keep one.",
                file=path,
                line=1,
                field=name,
            )
        seen.add(name)
