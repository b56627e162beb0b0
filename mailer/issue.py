"""An issue as loaded: its bulletin and its validated recipient lists, nothing rendered.

What ``status`` needs, and the first half of what a send or a preview needs
(``pipeline.prepare`` adds the composer). Kept light: loading an issue imports
none of the rendering or sending stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailer.bulletin import Bulletin, load_bulletin
from mailer.errors import ContentError, Problems
from mailer.recipients import RecipientList, available_segments, load_recipients
from mailer.settings import Settings


@dataclass
class Issue:
    """A bulletin and the validated lists of the segments it goes to."""

    bulletin: Bulletin
    recipients: RecipientList


def load_issue(
    folder: Path,
    settings: Settings,
    *,
    recipients_dir: Path | None = None,
    segments: Sequence[str] = (),
    skip_invalid: bool = False,
) -> Issue:
    """Load and validate the bulletin in ``folder`` and the lists it goes to: every
    problem of both in one run (the bulletin's first, then the lists')."""
    directory = recipients_dir or settings.recipients_dir
    known = available_segments(directory)
    problems = Problems()
    bulletin: Bulletin | None = None
    with problems.catch():
        bulletin = load_bulletin(folder, known)
    chosen = every = tuple(known)
    if bulletin is not None:
        with problems.catch():
            chosen = _choose_segments(bulletin, known, segments)
        # --segment narrows who is mailed, never what they get: a reader of S who is
        # also in another segment of the issue receives the whole variant of a full send.
        every = bulletin.segments or tuple(known)
    recipients: RecipientList | None = None
    with problems.catch():
        recipients = load_recipients(directory, every, skip_invalid=skip_invalid, only=chosen)
    problems.check()
    assert bulletin is not None and recipients is not None
    return Issue(bulletin, recipients)


def _choose_segments(
    bulletin: Bulletin, known: Sequence[str], asked: Sequence[str]
) -> tuple[str, ...]:
    """Segments in bulletin order (else alphabetical), narrowed by ``--segment``."""
    base = bulletin.segments or tuple(known)
    for segment in asked:
        if segment not in base:
            raise ContentError(
                f"--segment {segment}: not a segment of this bulletin ({', '.join(base)}).",
                file=bulletin.path / "bulletin.yaml",
                field="segments",
            )
    return tuple(s for s in base if s in asked) if asked else base
