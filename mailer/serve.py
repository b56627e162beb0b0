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
- A forged, truncated or malformed token: 400, nothing recorded. A token from a
  test copy (``--test-to``): a page saying nobody was unsubscribed.

``GET /suppressions?after=ID`` and ``POST /suppressions/acknowledge``, with
``Authorization: Bearer <MAILER_SERVE_API_TOKEN>`` (compared in constant time):
the requests no sync has acknowledged, and their acknowledgement once ``mailer
sync`` wrote them (see :class:`Store`); ``GET /health`` commits a heartbeat for
the host's monitoring. No log line holds a token (uvicorn's access log is off),
and every answer sends ``Referrer-Policy: no-referrer`` and ``Cache-Control:
no-store``. The SQLite file (``MAILER_SERVE_DB``) is the app's only state.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailer import templating
from mailer.bulletin import LANGUAGES
from mailer.errors import ConfigError, InputError
from mailer.settings import Settings
from mailer.unsubscribe import TokenData, read_token

MAX_BODY = 16 * 1024  # a one-click POST is a few dozen bytes
RETENTION = timedelta(days=30)  # acknowledged rows are deleted after this grace period
PAGE = 1000  # rows an export page holds at most
HEARTBEAT = 10.0  # seconds between /health's test writes
HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # img-src https: for the organization's logo (MAILER_LOGO_URL must be https).
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https:; form-action 'self'"
    ),
}


class Store:
    """The endpoint's requests, in SQLite: durable before the reply, one row per request.

    Each request is a row of its own (a reader who unsubscribes again after staff
    removed the suppression is a new event); a repeat while the first is not yet
    acknowledged adds nothing. ``mailer sync`` reads the unacknowledged rows and
    acknowledges, in a separate request, exactly the ids whose effect it wrote to
    disk; only acknowledged rows older than ``RETENTION`` are deleted. So a
    database recreated or restored from a backup loses nothing a sync has not
    written. The database has an identity, a random id made with it, which
    every export page carries.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one writer at a time inside this process
        self._heartbeat: tuple[float, bool] = (0.0, False)
        try:
            with self._connection() as db:
                db.execute("PRAGMA journal_mode=WAL")
                self._migrate(db)
                db.execute("UPDATE meta SET value = ? WHERE key = 'heartbeat'", (_now(),))
        except sqlite3.Error as exc:
            raise ConfigError(
                f"the endpoint's database cannot be used ({exc}); it must be a writable "
                "SQLite file (or a new path).",
                file=path,
                field="MAILER_SERVE_DB",
            ) from None

    @property
    def identity(self) -> str:
        """The database's random id, read each time: a file replaced under a running
        endpoint (a backup restored) answers with its own."""
        with self._connection() as db:
            found = db.execute("SELECT value FROM meta WHERE key = 'database'").fetchone()
        return str(found[0]) if found else ""

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Create the tables, or bring an older database (one row per address) up to date."""
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('database', ?), ('heartbeat', '')",
            (secrets.token_hex(16),),
        )
        old = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'requests'"
        ).fetchone()
        if old is not None and "acknowledged" not in old[0]:
            db.execute("ALTER TABLE requests RENAME TO requests_before")
        db.execute(
            "CREATE TABLE IF NOT EXISTS requests ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " address TEXT NOT NULL COLLATE NOCASE,"
            " issue TEXT NOT NULL,"
            " received TEXT NOT NULL,"
            " acknowledged TEXT)"
        )
        if old is not None and "acknowledged" not in old[0]:
            db.execute(
                "INSERT INTO requests (id, address, issue, received) "
                "SELECT id, address, issue, received FROM requests_before"
            )
            db.execute("DROP TABLE requests_before")
        db.execute("CREATE INDEX IF NOT EXISTS unacknowledged ON requests (acknowledged, id)")
        db.execute("COMMIT")

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def record(self, address: str, issue: str) -> None:
        """Record a request (a repeat not yet synced adds nothing); durable on return."""
        with self._lock, self._connection() as db:
            db.execute(
                "INSERT INTO requests (address, issue, received) SELECT ?, ?, ? WHERE NOT EXISTS"
                " (SELECT 1 FROM requests WHERE address = ? AND acknowledged IS NULL)",
                (address, issue[:100], _now(), address),
            )

    def unacknowledged(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Rows not yet acknowledged, with ids above ``after``, oldest first."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT id, address, issue, received FROM requests "
                "WHERE acknowledged IS NULL AND id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [{"id": r[0], "address": r[1], "issue": r[2], "received": r[3]} for r in rows]

    def acknowledge(
        self, database: str, rows: list[tuple[int, str]], before: datetime
    ) -> tuple[int, int] | None:
        """Mark the (id, address) rows a sync wrote; delete acknowledged rows older than
        ``before``. None when ``database`` is not this one (nothing is marked).

        An acknowledgement names the address too: a database restored from a backup
        may give an id the sync read to another, newer request.
        """
        with self._lock, self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            found = db.execute("SELECT value FROM meta WHERE key = 'database'").fetchone()
            if found is None or found[0] != database:
                db.execute("ROLLBACK")
                return None
            done = db.executemany(
                "UPDATE requests SET acknowledged = ? "
                "WHERE id = ? AND address = ? AND acknowledged IS NULL",
                [(_now(), row_id, address) for row_id, address in rows],
            ).rowcount
            gone = db.execute(
                "DELETE FROM requests WHERE acknowledged IS NOT NULL AND received < ?",
                (before.isoformat(timespec="seconds"),),
            ).rowcount
            db.execute("COMMIT")
        return int(done), int(gone)

    def healthy(self, clock: Callable[[], float] = time.monotonic) -> bool:
        """Whether a write commits (a one-row heartbeat, at most every 10 s; cached)."""
        last, ok = self._heartbeat
        if clock() - last < HEARTBEAT and last:
            return ok
        try:
            with self._lock, self._connection() as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'heartbeat'", (_now(),))
            ok = True
        except sqlite3.Error:
            ok = False
        self._heartbeat = (clock(), ok)
        return ok


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    pages = _Pages(settings)
    path = urlsplit(settings.unsubscribe_url).path or "/"

    def reader(request: Request) -> tuple[TokenData, str] | None:
        """What a genuine token says, and the page language; None for a forged one."""
        try:
            found = read_token(secret, request.query_params.get("token", ""))
        except InputError:
            return None
        language = request.query_params.get("lang", "en")
        return found, language if language in LANGUAGES else "en"

    async def unsubscribe(request: Request) -> Response:
        found = reader(request)
        if found is None:
            language = request.query_params.get("lang", "en")
            return pages.answer("invalid", language if language in LANGUAGES else "en", 400)
        token, language = found
        if token.test:
            return pages.answer("test", language, 200)  # a test copy unsubscribes nobody
        if request.method == "GET":
            return pages.answer("confirm", language, 200, token.address)
        body = await _body(request)
        if body is None:
            return PlainTextResponse("Request body too large.", 413, headers=HEADERS)
        if not await _asks_to_unsubscribe(request, body):
            return pages.answer("confirm", language, 400, token.address)
        # The issue comes from the token; links from before tokens held it name it.
        issue = token.issue or request.query_params.get("issue", "")
        await run_in_threadpool(store.record, token.address, issue)
        return pages.answer("done", language, 200, token.address)

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        return bool(api_token) and hmac.compare_digest(given, api_token)

    async def export(request: Request) -> Response:
        if not authorized(request):
            return PlainTextResponse("Unauthorized.", 401, headers=HEADERS)
        try:
            after = int(request.query_params.get("after", "0"))
            limit = min(PAGE, max(1, int(request.query_params.get("limit", str(PAGE)))))
            if not 0 <= after < 2**63:
                raise ValueError
        except ValueError:
            return PlainTextResponse("after and limit must be numbers.", 400, headers=HEADERS)
        identity = await run_in_threadpool(lambda: store.identity)
        rows = await run_in_threadpool(store.unacknowledged, after, limit)
        return JSONResponse({"database": identity, "requests": rows}, headers=HEADERS)

    async def acknowledge(request: Request) -> Response:
        if not authorized(request):
            return PlainTextResponse("Unauthorized.", 401, headers=HEADERS)
        body = await _body(request, limit=PAGE * 400)
        try:
            data = json.loads(body or b"")
            rows = [(row["id"], row["address"]) for row in data["rows"]]
            if not isinstance(data.get("database"), str) or len(rows) > PAGE:
                raise ValueError
            for row_id, address in rows:
                if type(row_id) is not int or not 0 < row_id < 2**63:
                    raise ValueError
                if not isinstance(address, str):
                    raise ValueError
        except (ValueError, KeyError, TypeError):
            return PlainTextResponse(
                "expected {database, rows: [{id, address}]}.", 400, headers=HEADERS
            )
        before = datetime.now(UTC) - RETENTION
        done = await run_in_threadpool(store.acknowledge, data["database"], rows, before)
        if done is None:
            return PlainTextResponse("not this database.", 409, headers=HEADERS)
        return JSONResponse({"acknowledged": done[0]}, headers=HEADERS)

    async def health(request: Request) -> Response:
        ok = await run_in_threadpool(store.healthy)
        text, status = ("ok", 200) if ok else ("the database does not accept writes", 503)
        return PlainTextResponse(text, status, headers=HEADERS)

    routes = [
        Route(path, unsubscribe, methods=["GET", "POST"]),
        Route("/suppressions", export, methods=["GET"]),
        Route("/suppressions/acknowledge", acknowledge, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False  # RFC 8058 §3.1: no redirect of any kind
    return app


async def _body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > limit:
            return None
    return bytes(data)


async def _asks_to_unsubscribe(request: Request, body: bytes) -> bool:
    """RFC 8058's ``List-Unsubscribe=One-Click``, or our confirmation form's field.

    The body (already read within MAX_BODY) goes through Starlette's own form
    parser (python-multipart): urlencoded or multipart/form-data in every form
    real clients send (a quoted boundary, ``BOUNDARY=``, ``; charset=``).
    """

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = dict(await Request(request.scope, replay).form())
    except Exception:  # a body that is not a form at all
        form = {}
    if not form:  # no form Content-Type (some clients send none): read it as urlencoded
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}
    return form.get("List-Unsubscribe") == "One-Click" or form.get("confirm") == "yes"


class _Pages:
    """The endpoint's short pages, in the reader's language (gettext catalogs), with the
    organization's masthead: who is writing, which bulletin, which address (masked), and
    whom to write to (an unsubscribe by mistake is undone by a mail to the secretariat)."""

    def __init__(self, settings: Settings) -> None:
        self.templates = settings.templates_dir
        self.env = templating.environment(self.templates, autoescape=True)
        self.organization = settings.list_display_name
        self.contact = parseaddr(settings.reply_to or settings.from_ or "")[1] or None
        self.archive = (settings.archive_url or "").rstrip("/") or None
        self.logo_url = settings.logo_url

    def answer(
        self, kind: str, language: str, status: int, address: str | None = None
    ) -> HTMLResponse:
        catalog = templating.translations(self.templates, language)
        templating.use_language(self.env, catalog, language)
        html = self.env.get_template("serve/page.html.j2").render(
            kind=kind,
            lang=language,
            organization=self.organization,
            bulletin_name=catalog.gettext("Bulletin"),
            home_href=None,
            alternates=[],
            masked=masked(address) if address else None,
            contact=self.contact,
            archive=f"{self.archive}/{language}/index.html" if self.archive else None,
            logo_url=self.logo_url,
        )
        return HTMLResponse(html, status, headers=HEADERS)


def masked(address: str) -> str:
    """``a•••••r@example.org``: enough for a reader to recognize their address, not
    enough for a shoulder-surfer or a screenshot to reveal it."""
    local, _, domain = address.rpartition("@")
    if len(local) <= 2:
        return f"{local[:1]}•••@{domain}"
    return f"{local[0]}{'•' * min(len(local) - 2, 5)}{local[-1]}@{domain}"


# RFC 8058's number: no mail tool listens there (8025, the old default, is where
# MailHog, Mailpit and aiosmtpd's examples take test mail).
DEFAULT_PORT = 8058


def listen_address(settings: Settings, host: str | None, port: int | None) -> tuple[str, int]:
    """Where to listen: what is given; else, when MAILER_UNSUBSCRIBE_URL points at this
    machine (a local trial), its host and port, so the links in the messages work;
    else 127.0.0.1 (behind a reverse proxy) and DEFAULT_PORT."""
    url = urlsplit(settings.unsubscribe_url or "")
    local = url.hostname in ("127.0.0.1", "localhost")
    default_host = "127.0.0.1"
    default_port = (url.port or 80) if local and url.scheme == "http" else DEFAULT_PORT
    return host or default_host, port or default_port


def _free(host: str, port: int) -> None:
    """Refuse, in one line, an address another program holds (uvicorn would print a
    traceback's worth and exit 3)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}): another program "
                "holds it, or the address is not this machine's; pass --port (or --host).",
                field="--port",
            ) from None


def serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> None:
    """Run the endpoint under uvicorn (no access log: URLs carry tokens); ``say`` tells
    the person where it listens, ``warn`` what is missing."""
    import uvicorn

    app = create_app(settings)
    host, port = listen_address(settings, host, port)
    _free(host, port)
    say(f"Unsubscribe endpoint on http://{host}:{port}/unsubscribe (Ctrl-C stops it).")
    if settings.unsubscribe_url:
        say(f"Messages link to {settings.unsubscribe_url}: put it in front of this address.")
    if settings.serve_api_token is None:
        warn(
            "MAILER_SERVE_API_TOKEN is not set: readers can unsubscribe, but "
            "`mailer sync` cannot collect their requests (it would get 401)."
        )
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        log_level="warning",
    )
