"""``mailer serve``: the one-click unsubscribe endpoint (RFC 8058) and its export.

A small ASGI app: Starlette (routing, forms, responses, well kept and small)
served by uvicorn. At the path of ``MAILER_UNSUBSCRIBE_URL``:

- ``POST`` with ``List-Unsubscribe=One-Click`` (urlencoded or multipart, RFC
  8058 §3.2) or the confirmation form, the token in the query string: recorded
  durably (SQLite, WAL, ``synchronous=FULL``, committed before the reply), then
  200 with a short page in the reader's language. Never a redirect. Repeats are
  harmless.
- ``GET`` with a genuine token: a page that says what will happen, with one
  button (a POST). A GET never unsubscribes: link scanners fetch every URL.
- A forged, truncated or malformed token: 400, nothing recorded.

``GET /suppressions?since=CURSOR`` with ``Authorization: Bearer
<MAILER_SERVE_API_TOKEN>`` (compared in constant time) returns the requests
recorded after the cursor, for ``mailer sync``, and deletes the rows up to the
cursor once they are older than ``RETENTION`` (30 days); ``GET /health`` answers the
host's monitoring. No log line holds a token (uvicorn's access log is off),
and every answer sends ``Referrer-Policy: no-referrer`` and ``Cache-Control:
no-store``. The SQLite file (``MAILER_SERVE_DB``) is the app's only state.
"""

from __future__ import annotations

import hmac
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailer import language as lang
from mailer.bulletin import LANGUAGES
from mailer.compose import default_templates
from mailer.errors import ConfigError, InputError
from mailer.settings import Settings
from mailer.unsubscribe import verify_token

MAX_BODY = 16 * 1024  # a one-click POST is a few dozen bytes
RETENTION = timedelta(days=30)  # synced rows are deleted after this grace period
HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


class Store:
    """The endpoint's requests, in SQLite: durable before the reply, one row per address."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one writer at a time inside this process
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS requests ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " address TEXT NOT NULL UNIQUE COLLATE NOCASE,"
                " issue TEXT NOT NULL,"
                " received TEXT NOT NULL)"
            )

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def record(self, address: str, issue: str) -> None:
        """Record a request (a repeat changes nothing); durable when this returns."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock, self._connection() as db:
            db.execute(
                "INSERT OR IGNORE INTO requests (address, issue, received) VALUES (?, ?, ?)",
                (address, issue[:100], now),
            )

    def since(self, cursor: int, limit: int = 1000) -> list[dict[str, Any]]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT id, address, issue, received FROM requests WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (cursor, limit),
            ).fetchall()
        return [{"id": r[0], "address": r[1], "issue": r[2], "received": r[3]} for r in rows]

    def forget(self, acknowledged: int, before: datetime) -> int:
        """Delete rows sync has acknowledged (id ≤ its cursor) and older than ``before``:
        the endpoint keeps addresses no longer than it needs them."""
        with self._lock, self._connection() as db:
            gone = db.execute(
                "DELETE FROM requests WHERE id <= ? AND received < ?",
                (acknowledged, before.isoformat(timespec="seconds")),
            )
            return int(gone.rowcount)

    def healthy(self) -> bool:
        with self._connection() as db:
            return db.execute("SELECT count(*) FROM requests").fetchone() is not None


def create_app(settings: Settings) -> Starlette:
    """The endpoint for ``settings`` (unsubscribe URL, secret, database, API token)."""
    if not settings.unsubscribe_url or settings.unsubscribe_secret is None:
        raise ConfigError(
            "the endpoint answers at MAILER_UNSUBSCRIBE_URL and checks tokens with "
            "MAILER_UNSUBSCRIBE_SECRET: set both.",
            field="MAILER_UNSUBSCRIBE_URL",
        )
    secret = settings.unsubscribe_secret.get_secret_value().encode()
    api_token = (
        settings.serve_api_token.get_secret_value().encode() if settings.serve_api_token else b""
    )
    store = Store(settings.serve_db)
    pages = _Pages(settings.templates_dir or default_templates())
    path = urlsplit(settings.unsubscribe_url).path or "/"

    def reader(request: Request) -> tuple[str, str, str] | None:
        """(address, issue, language) of a genuine token, else None."""
        try:
            address = verify_token(secret, request.query_params.get("token", ""))
        except InputError:
            return None
        language = request.query_params.get("lang", "en")
        issue = request.query_params.get("issue", "")
        return address, issue, language if language in LANGUAGES else "en"

    async def unsubscribe(request: Request) -> Response:
        found = reader(request)
        language = found[2] if found else "en"
        if found is None:
            return pages.answer("invalid", language, 400)
        if request.method == "GET":
            return pages.answer("confirm", language, 200)
        body = await _body(request)
        if body is None:
            return PlainTextResponse("Request body too large.", 413, headers=HEADERS)
        if not _asks_to_unsubscribe(body, request.headers.get("content-type", "")):
            return pages.answer("confirm", language, 400)
        address, issue, _ = found
        await run_in_threadpool(store.record, address, issue)
        return pages.answer("done", language, 200)

    async def export(request: Request) -> Response:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not api_token or not hmac.compare_digest(given, api_token):
            return PlainTextResponse("Unauthorized.", 401, headers=HEADERS)
        try:
            cursor = int(request.query_params.get("since", "0"))
        except ValueError:
            return PlainTextResponse("since must be a number.", 400, headers=HEADERS)
        rows = await run_in_threadpool(store.since, cursor)
        # A cursor is the caller saying it has everything up to there.
        await run_in_threadpool(store.forget, cursor, datetime.now(UTC) - RETENTION)
        next_cursor = rows[-1]["id"] if rows else cursor
        return JSONResponse({"requests": rows, "cursor": next_cursor}, headers=HEADERS)

    async def health(request: Request) -> Response:
        ok = await run_in_threadpool(store.healthy)
        return PlainTextResponse("ok" if ok else "database unavailable", 200 if ok else 503)

    routes = [
        Route(path, unsubscribe, methods=["GET", "POST"]),
        Route("/suppressions", export, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False  # RFC 8058 §3.1: no redirect of any kind
    return app


async def _body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_BODY:
            return None
    return bytes(data)


def _asks_to_unsubscribe(body: bytes, content_type: str) -> bool:
    """RFC 8058's ``List-Unsubscribe=One-Click``, or our confirmation form's field.

    Read from urlencoded or multipart/form-data bodies (RFC 8058 §3.2 allows both).
    """
    text = body.decode("utf-8", "replace")
    if content_type.startswith("multipart/form-data"):
        fields = _multipart_fields(text, content_type)
    else:
        fields = {k: v[0] for k, v in parse_qs(text).items() if v}
    return fields.get("List-Unsubscribe") == "One-Click" or fields.get("confirm") == "yes"


def _multipart_fields(text: str, content_type: str) -> dict[str, str]:
    """The small text fields of a multipart/form-data body (enough for RFC 8058)."""
    boundary = content_type.partition("boundary=")[2].strip().strip('"')
    fields: dict[str, str] = {}
    if not boundary:
        return fields
    for part in text.split(f"--{boundary}"):
        head, _, value = part.partition("\r\n\r\n")
        marker = 'name="'
        if marker in head:
            name = head.split(marker, 1)[1].split('"', 1)[0]
            fields[name] = value.removesuffix("\r\n")
    return fields


class _Pages:
    """The endpoint's short pages, in the reader's language (gettext catalogs)."""

    def __init__(self, templates: Path) -> None:
        self.locale = templates / "locale"
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates)),
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
        )

    def answer(self, kind: str, language: str, status: int) -> HTMLResponse:
        catalog = lang.translations(self.locale, language)
        self.env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
        html = self.env.get_template("serve/page.html.j2").render(kind=kind, lang=language)
        return HTMLResponse(html, status, headers=HEADERS)


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the endpoint under uvicorn (no access log: URLs carry tokens)."""
    import uvicorn

    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        log_level="warning",
    )
