"""The relay's quotas: sliding windows such as ``30/minute, 10000/day``, held exactly.

``MAILER_RATE_LIMITS`` lists the windows (units second, minute, hour, day); all
hold at once, as the per-second rate does: in no window of that length do more
messages start than its count. Windows longer than a run are counted from the
ledgers, every issue's (they all go through the same relay): a second run on the
same day sees what the first one used. The ledgers do not see mail the same
mailbox sends otherwise, so leave headroom below the relay's figure.

When a window is full, a short wait (up to ``MAX_WAIT``) is waited out; a longer
one stops the run cleanly (:class:`QuotaReached`): the rest stays pending, and
the summary says when sending can resume.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_WAIT = 300.0  # seconds a run waits for a window; beyond that it stops and resumes later
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Limit:
    """At most ``count`` messages in any ``seconds``-long window."""

    count: int
    seconds: int

    @property
    def label(self) -> str:
        unit = next(name for name, length in UNITS.items() if length == self.seconds)
        return f"{self.count}/{unit}"


def parse_limits(text: str) -> tuple[Limit, ...]:
    """``30/minute, 10000/day`` → limits; ValueError names the part it cannot read."""
    limits = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _LIMIT.match(part)
        if match is None or int(match[1]) < 1:
            raise ValueError(
                f"'{part.strip()[:40]}' is not a limit; write e.g. 30/minute, 10000/day "
                "(units second, minute, hour, day)"
            )
        limits.append(Limit(int(match[1]), UNITS[match[2].lower()]))
    return tuple(limits)


class QuotaReached(Exception):
    """A window is full for longer than a run waits: stop, resume at ``resume_at``."""

    def __init__(self, limit: Limit, resume_at: float) -> None:
        moment = datetime.fromtimestamp(resume_at, UTC).isoformat(timespec="minutes")
        super().__init__(
            f"the relay's quota of {limit.label} is used up; sending can resume after "
            f"{moment} (UTC). Run the same command then: the rest stays pending "
            "(the scheduled workflow resumes on its own)."
        )
        self.limit = limit
        self.resume_at = resume_at


Clock = Callable[[], float]


class Quota:
    """Message starts, past (from the ledgers) and present, against every limit."""

    def __init__(self, limits: Iterable[Limit], history: Iterable[float], clock: Clock) -> None:
        self.limits = tuple(limits)
        self.clock = clock
        self.starts = sorted(history)  # epoch seconds
        self.lock = asyncio.Lock()

    def earliest(self, now: float) -> tuple[float, Limit | None]:
        """When the next message may start, and the limit that decides it."""
        at, deciding = now, None
        for limit in self.limits:
            inside = len(self.starts) - bisect.bisect_right(self.starts, now - limit.seconds)
            if inside >= limit.count:
                # The window frees a place when its oldest counted start leaves it.
                oldest = self.starts[len(self.starts) - limit.count]
                if oldest + limit.seconds > at:
                    at, deciding = oldest + limit.seconds, limit
        return at, deciding

    async def take(self, interrupted: asyncio.Event | None = None) -> bool:
        """Wait for a place in every window (briefly), or raise :class:`QuotaReached`.

        False when ``interrupted`` (Ctrl-C, a stop) ends the wait first: no place taken.
        """
        async with self.lock:
            now = self.clock()
            at, limit = self.earliest(now)
            if limit is not None and at - now > MAX_WAIT:
                raise QuotaReached(limit, at)
            if at > now:
                stop = interrupted or asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), at - now)
                    return False
            self.starts.append(max(at, self.clock()))
            return True


def ledger_history(ledger_dir: Path, since: float) -> list[float]:
    """Times (epoch seconds) of the messages sent since ``since``, from every ledger."""
    from mailer.ledger import LedgerDir

    return LedgerDir(ledger_dir).sent_since(since)
