"""Fast path of the scheduled run: is any bulletin within its dispatch window?

Standard library only, so it runs before anything is installed: a scheduled run
that finds nothing between ``send_at`` and ``send_at + MAILER_DISPATCH_WINDOW``
stops here, in seconds. (A private repository's Actions minutes are billed; see
README, "Scheduled sending".) It errs on the side of running: any bulletin whose
``send_at`` it cannot read makes the full run go, and report it; so does a
ledger whose last run stopped at the relay's quota (a send spread over days).
Prints ``due=true`` or ``due=false`` (for $GITHUB_OUTPUT).
"""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

_SEND_AT = re.compile(r"^send_at:\s*['\"]?([^'\"#\s]+)", re.MULTILINE)
_WINDOW = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}


def window() -> timedelta:
    text = os.environ.get("MAILER_DISPATCH_WINDOW") or "72h"
    match = _WINDOW.match(text)
    if not match:
        return timedelta(days=3650)  # unreadable: let mailer itself report it
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def paused(ledger: Path) -> bool:
    """Whether the issue's last run stopped at the relay's quota (its ledger's tail says)."""
    if not ledger.is_file():
        return False
    with ledger.open("rb") as handle:
        handle.seek(max(0, ledger.stat().st_size - 4096))
        tail = handle.read().decode("utf-8", "replace")
    last_pause = tail.rfind('"outcome": "paused"')
    return last_pause > max(tail.rfind('"outcome": "sent"'), tail.rfind('"outcome": "claim"'))


def due(root: Path, now: datetime, ledgers: Path) -> bool:
    limit = window()
    for path in sorted(root.glob("*/bulletin.yaml")):
        if paused(ledgers / f"{path.parent.name}.jsonl"):
            return True  # a send under way (a list larger than a day's quota)
        match = _SEND_AT.search(path.read_text(encoding="utf-8", errors="replace"))
        if match is None:
            continue  # unscheduled: never sent by dispatch
        try:
            moment = datetime.fromisoformat(match.group(1))
        except ValueError:
            return True
        if moment.tzinfo is None or moment <= now <= moment + limit:
            return True
    return False


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bulletins")
    ledgers = Path(sys.argv[2] if len(sys.argv) > 2 else "ledger")
    now = datetime.fromisoformat(os.environ["NOW"]) if os.environ.get("NOW") else datetime.now(UTC)
    print(f"due={'true' if due(root, now, ledgers) else 'false'}")
