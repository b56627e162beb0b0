"""``mailer sync``: bring back what readers said, into ``suppressions.csv``, idempotently.

Two sources: the one-click requests recorded by ``mailer serve``
(``MAILER_SERVE_URL`` and ``MAILER_SERVE_API_TOKEN``): every request no sync
has acknowledged, page by page, each page acknowledged once its suppressions
are on disk (a crash between the two only repeats harmless suppressions); and
the inbound mailbox over IMAP (``inbox.py``). The time of each source's last
successful sync, the endpoint database's identity and the mailbox messages
left for staff are written atomically to ``<ledger dir>/sync-state.json`` (not
a ``.jsonl``: never taken for an issue's ledger).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
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
PAGE = 1000  # rows asked for per export page
MAX_PAGES = 1000  # a bound on one sync: a million requests
MAX_ANSWER = 2 * 1024 * 1024  # bytes: a full page is about 150 KB
ANSWER_SECONDS = 60.0  # an answer must be whole within this, however it trickles


@dataclass
class SourceResult:
    """What one source gave, or why it could not be read."""

    name: str
    added: list[str] = field(default_factory=list)
    already: int = 0
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    # The same fields as the mailbox's result (inbox.InboxResult), so one view prints both.
    effects: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fatal: bool = False


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

        remembered = state.get("mailbox", {}).get("left")
        mailbox = read_mailbox(settings, recipients_dir, remembered)
        if mailbox.error is None:
            state.setdefault("mailbox", {})["last_success"] = _now()
            state["mailbox"]["left"] = mailbox.left  # staff's mail, not read again
            _save_state(settings, state)
        results.append(mailbox)
    if not results:
        raise ConfigError(
            "no source to sync: set MAILER_SERVE_URL and MAILER_SERVE_API_TOKEN, "
            "or MAILER_IMAP_HOST (and its user and password).",
        )
    return results


def exit_code(results: list[SourceResult | InboxResult]) -> int:
    """2 when a setting must change (a refused sign-in), 1 when a source could not be
    read this time, else 0."""
    if any(result.fatal for result in results):
        return 2
    return 1 if any(result.error for result in results) else 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the bearer token must reach no other host (the endpoint
    never redirects, by design)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class _Refused(Exception):
    """The endpoint's answer cannot be used; the text says why, for staff."""


def _call(settings: Settings, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST ``body`` as JSON) ``path`` of the endpoint; its JSON answer, size-capped
    and read within ``ANSWER_SECONDS`` in all (a server dripping bytes cannot hold a sync)."""
    assert settings.serve_url and settings.serve_api_token
    token = settings.serve_api_token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    url = settings.serve_url.rstrip("/") + path
    request = urllib.request.Request(url, data=data, headers=headers)
    deadline = time.monotonic() + ANSWER_SECONDS
    try:
        with _OPENER.open(request, timeout=settings.network_timeout) as answer:
            raw = b""
            while len(raw) <= MAX_ANSWER and (chunk := answer.read1(65536)):
                raw += chunk
                if time.monotonic() > deadline:
                    raise _Refused(f"an answer still coming after {ANSWER_SECONDS:.0f} s")
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise _Refused(
                f"it answered with a redirect ({exc.code}); credentials never follow one: "
                "set MAILER_SERVE_URL to the endpoint's own https address"
            ) from None
        raise _Refused(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Refused(type(exc).__name__) from None
    if len(raw) > MAX_ANSWER:
        raise _Refused(f"an answer over {MAX_ANSWER:,} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise _Refused("an answer that is not JSON") from None


def _from_endpoint(settings: Settings, recipients_dir: Path, state: dict[str, Any]) -> SourceResult:
    """Apply every unacknowledged request, page by page, then acknowledge each page's rows.

    Only rows whose suppression is on disk are acknowledged, by id and address; the
    endpoint deletes nothing else. A page that is not valid (not an export, larger
    than asked, ids that do not advance) stops the sync before anything from it is
    applied. The sync reads until a page comes back empty.
    """
    result = SourceResult("endpoint")
    source = state.setdefault("endpoint", {})
    # From before acknowledgements: the old sync already applied every row up to its
    # cursor (staff may have re-added some since), so those are acknowledged, not applied.
    applied_before = int(source.get("cursor", 0)) if "database" not in source else 0
    # ... and only rows received before that sync ran: a database recreated since starts
    # its ids again, and its rows were never seen.
    seen_until = str(source.get("last_success", ""))
    after = 0
    try:
        for _ in range(MAX_PAGES):
            answer = _call(settings, f"/suppressions?after={after}&limit={PAGE}")
            database, rows = _page(answer, after)
            if source.get("database") not in (None, database):
                result.notes.append(
                    "the endpoint's database is not the one seen before (recreated or restored "
                    "from a backup): every request it holds that no sync acknowledged was read"
                )
            source["database"] = database
            if not rows:
                break
            fresh = [
                r
                for r in rows
                if r["id"] > applied_before or str(r.get("received", "")) > seen_until
            ]
            # The issue the token named goes into the reason: the health report then
            # counts the unsubscribe for that issue exactly, not by its day.
            by_issue: dict[str, list[str]] = {}
            for r in fresh:
                by_issue.setdefault(_issue_of(r), []).append(r["address"])
            for issue, addresses in by_issue.items():
                reason = suppressions.with_issue("one-click unsubscribe", issue)
                added = suppressions.suppress(recipients_dir, addresses, reason)
                result.added += added.added
                result.already += len(added.already)
                result.refused += [address for address, _ in added.refused]
            written = [{"id": r["id"], "address": r["address"]} for r in rows]
            _call(settings, "/suppressions/acknowledge", {"database": database, "rows": written})
            after = rows[-1]["id"]
        else:
            raise _Refused(f"more than {MAX_PAGES * PAGE:,} requests in one sync")
    except _Refused as exc:
        result.error = (
            f"the endpoint {_shown(settings.serve_url)} could not be read ({exc}); check "
            "MAILER_SERVE_URL and MAILER_SERVE_API_TOKEN."
        )
        return result
    source.pop("cursor", None)  # from before acknowledgements: never trusted again
    source["last_success"] = _now()
    _save_state(settings, state)
    return result


def _issue_of(row: dict[str, Any]) -> str:
    """The issue a request names, when it is an id (anything else: none)."""
    issue = row.get("issue")
    return (
        issue
        if isinstance(issue, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", issue)
        else ""
    )


def _shown(url: str | None) -> str:
    """A URL as it may be printed: without a user name or password in it."""
    parts = urllib.parse.urlsplit(url or "")
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def _page(data: object, after: int) -> tuple[str, list[dict[str, Any]]]:
    """The database id and rows of one export page; refused when it is not one (a proxy's
    error page, a wrong URL, a hostile server): nothing is suppressed from such a page."""
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        raise _Refused("not an export page")
    database, rows = data.get("database"), data["requests"]
    if not isinstance(database, str) or not database:
        raise _Refused("an export without the database's id (an endpoint older than this mailer?)")
    if len(rows) > PAGE:
        raise _Refused(f"a page of {len(rows)} rows where {PAGE} were asked for")
    previous = after
    for row in rows:
        if not (
            isinstance(row, dict)
            and isinstance(row.get("address"), str)
            and type(row.get("id")) is int
            and row["id"] > previous
        ):
            raise _Refused("a page whose rows are not requests after the cursor")
        previous = row["id"]
    return database, rows


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
