"""``mailer sync``: bring back what readers said, into ``suppressions.csv``, idempotently.

Two sources: the one-click requests recorded by ``mailer serve``
(``MAILER_SERVE_URL`` and ``MAILER_SERVE_API_TOKEN``), read page by page after
the last cursor; and the inbound mailbox over IMAP (``inbox.py``). Addresses go
to the suppression list first; the cursor and the time of each source's last
successful sync are written after, atomically, to ``<ledger dir>/sync-state.json``
(not a ``.jsonl``: never taken for an issue's ledger), so a crash between the
two only repeats harmless suppressions.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer import suppressions
from mailer.errors import ConfigError
from mailer.settings import Settings

if TYPE_CHECKING:
    from mailer.inbox import InboxResult

STATE_FILE = "sync-state.json"
PAGE = 1000


@dataclass
class SourceResult:
    """What one source gave, or why it could not be read."""

    name: str
    added: list[str] = field(default_factory=list)
    already: int = 0
    refused: list[str] = field(default_factory=list)
    error: str | None = None


def state_path(settings: Settings) -> Path:
    return settings.ledger_dir / STATE_FILE


def load_state(settings: Settings) -> dict[str, Any]:
    path = state_path(settings)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(settings: Settings, state: dict[str, Any]) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(path)


def sync(settings: Settings, recipients_dir: Path) -> list[SourceResult | InboxResult]:
    """Read every configured source; returns one result per source."""
    results: list[SourceResult | InboxResult] = []
    state = load_state(settings)
    if settings.serve_url and settings.serve_api_token:
        results.append(_from_endpoint(settings, recipients_dir, state))
    if settings.imap_host:
        from mailer.inbox import read_mailbox  # imaplib and the bounce reader: only here

        mailbox = read_mailbox(settings, recipients_dir)
        if mailbox.error is None:
            state.setdefault("mailbox", {})["last_success"] = _now()
            _save_state(settings, state)
        results.append(mailbox)
    return results


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _from_endpoint(settings: Settings, recipients_dir: Path, state: dict[str, Any]) -> SourceResult:
    result = SourceResult("endpoint")
    source = state.setdefault("endpoint", {})
    cursor = int(source.get("cursor", 0))
    assert settings.serve_url and settings.serve_api_token
    token = settings.serve_api_token.get_secret_value()
    while True:
        url = f"{settings.serve_url.rstrip('/')}/suppressions?since={cursor}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=settings.smtp_timeout) as answer:
                rows, next_cursor = _page(json.loads(answer.read()), cursor)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "code", None) or type(exc).__name__
            result.error = (
                f"the endpoint {settings.serve_url} could not be read ({reason}); check "
                "MAILER_SERVE_URL and MAILER_SERVE_API_TOKEN."
            )
            return result
        if not rows:
            break
        added = suppressions.suppress(recipients_dir, rows, "one-click unsubscribe")
        result.added += added.added
        result.already += len(added.already)
        result.refused += [address for address, _ in added.refused]
        cursor = next_cursor
        source["cursor"] = cursor
        _save_state(settings, state)  # after the suppressions are written
        if len(rows) < PAGE:
            break
    source["last_success"] = datetime.now(UTC).isoformat(timespec="seconds")
    _save_state(settings, state)
    return result


def _page(data: object, cursor: int) -> tuple[list[str], int]:
    """The addresses and the next cursor of one export page; ValueError when it is not one
    (a proxy's error page, a wrong URL): nothing is suppressed from a page not understood."""
    if not isinstance(data, dict) or not isinstance(data.get("requests", []), list):
        raise ValueError("not an export page")
    rows = data.get("requests", [])
    if not all(isinstance(r, dict) and isinstance(r.get("address"), str) for r in rows):
        raise ValueError("not an export page")
    next_cursor = data.get("cursor", cursor)
    if not isinstance(next_cursor, int) or next_cursor < cursor:
        raise ValueError("not an export page")
    return [r["address"] for r in rows], next_cursor


def require_fresh(settings: Settings, now: datetime | None = None) -> None:
    """Refuse a real send when a configured source was not synced within MAILER_SYNC_MAX_AGE.

    Otherwise a reader who unsubscribed yesterday could be mailed today.
    """
    sources = []
    if settings.serve_url and settings.serve_api_token:
        sources.append(("endpoint", "the unsubscribe endpoint"))
    if settings.imap_host:
        sources.append(("mailbox", "the inbound mailbox"))
    moment = now or datetime.now(UTC)
    state = load_state(settings)
    for key, label in sources:
        last = state.get(key, {}).get("last_success")
        when = datetime.fromisoformat(last) if isinstance(last, str) else None
        if when is None or moment - when > settings.sync_max_age:
            seen = f"was at {last}" if when else "never happened"
            raise ConfigError(
                f"the last sync of {label} {seen}, longer ago than MAILER_SYNC_MAX_AGE: "
                "readers who unsubscribed since could be mailed. Run mailer sync first; if "
                "the source is down and the issue cannot wait, pass --allow-stale-sync.",
                field="MAILER_SYNC_MAX_AGE",
            )
