"""The one-click unsubscribe endpoint under uvicorn on 127.0.0.1, and `mailer sync`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from mailer import sync as syncing
from mailer.cli import app
from mailer.serve import Store
from mailer.unsubscribe import make_token

from .conftest import SAMPLE, SAMPLE_RECIPIENTS
from .helpers import cli_env, drip, send_cli, write_list
from .smtp_server import Server, free_port

pytestmark = pytest.mark.system  # the endpoint under uvicorn in a subprocess

SECRET = "endpoint-test-secret"
API_TOKEN = "sync-api-token-for-tests"


@dataclass
class Endpoint:
    url: str  # the unsubscribe URL
    base: str
    db: Path
    process: subprocess.Popen[bytes]

    def link(self, address: str, language: str = "fr") -> str:
        token = make_token(SECRET.encode(), address)
        return f"{self.url}?token={token}&issue=2017-03&lang={language}"

    def rows(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.db) as db:
            return db.execute("SELECT address, issue FROM requests ORDER BY id").fetchall()


def start(tmp_path: Path) -> Endpoint:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_UNSUBSCRIBE_URL=f"{base}/unsubscribe",
        MAILER_UNSUBSCRIBE_SECRET=SECRET,
        MAILER_SERVE_DB=str(tmp_path / "requests.sqlite3"),
        MAILER_SERVE_API_TOKEN=API_TOKEN,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(100):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return Endpoint(f"{base}/unsubscribe", base, tmp_path / "requests.sqlite3", process)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(process.stderr.read().decode() if process.stderr else "no start")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    running = start(tmp_path_factory.mktemp("serve"))
    yield running
    running.process.terminate()
    running.process.wait(10)


ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def test_an_rfc_8058_post_unsubscribes_in_the_readers_language(endpoint: Endpoint) -> None:
    answer = httpx.post(endpoint.link("first@example.org"), data=ONE_CLICK)
    assert answer.status_code == 200 and "désabonné" in answer.text
    assert answer.headers["referrer-policy"] == "no-referrer"
    again = httpx.post(endpoint.link("first@example.org"), data=ONE_CLICK)
    assert again.status_code == 200
    assert endpoint.rows().count(("first@example.org", "2017-03")) == 1  # repeats harmless
    multipart = httpx.post(
        endpoint.link("second@example.org", "es"), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert multipart.status_code == 200 and "baja" in multipart.text
    assert ("second@example.org", "2017-03") in endpoint.rows()


def test_a_get_only_asks_and_never_unsubscribes(endpoint: Endpoint) -> None:
    page = httpx.get(endpoint.link("scanner@example.org", "en"))
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert "scanner@example.org" not in [address for address, _ in endpoint.rows()]
    confirmed = httpx.post(endpoint.link("scanner@example.org", "en"), data={"confirm": "yes"})
    assert confirmed.status_code == 200
    assert "scanner@example.org" in [address for address, _ in endpoint.rows()]


def legacy_token(secret: bytes, address: str) -> str:
    """A token as messages carried them before tokens became opaque: base64url of the
    address, a dot, the first 16 bytes of HMAC-SHA256 over it."""
    mac = hmac.new(secret, b"mailer-unsubscribe\0" + address.lower().encode(), hashlib.sha256)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(address.encode())}.{b64(mac.digest()[:16])}"


def _flipped(token: str, at: int) -> str:
    """``token`` with one base64url character changed."""
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


OPAQUE = make_token(SECRET.encode(), "victim@example.org", "2017-03")


@pytest.mark.parametrize(
    "token",
    [
        make_token(b"another secret", "victim@example.org", "2017-03"),  # another key
        OPAQUE[:-4],  # truncated
        _flipped(OPAQUE, 20),  # altered
        "B" + OPAQUE[1:],  # another version
        legacy_token(b"another secret", "victim@example.org"),
        legacy_token(SECRET.encode(), "someone@example.org").split(".")[0]
        + "."
        + legacy_token(SECRET.encode(), "victim@example.org").split(".")[1],  # swapped MAC
        "not-a-token",
        "",
    ],
)
def test_forged_tokens_are_refused_and_nothing_is_recorded(endpoint: Endpoint, token: str) -> None:
    before = endpoint.rows()
    answer = httpx.post(f"{endpoint.url}?token={token}&lang=en", data=ONE_CLICK)
    assert answer.status_code == 400 and "not valid" in answer.text
    assert endpoint.rows() == before


def test_no_redirect_no_big_body_and_an_authenticated_export(endpoint: Endpoint) -> None:
    slash = httpx.post(
        endpoint.link("a@example.org").replace("/unsubscribe?", "/unsubscribe/?"), data=ONE_CLICK
    )
    assert not 300 <= slash.status_code < 400
    big = httpx.post(endpoint.link("b@example.org"), content=b"x" * 100_000)
    assert big.status_code == 413
    assert httpx.get(f"{endpoint.base}/suppressions").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{endpoint.base}/suppressions", headers=wrong).status_code == 401
    good = {"Authorization": f"Bearer {API_TOKEN}"}
    export = httpx.get(f"{endpoint.base}/suppressions?after=0", headers=good).json()
    assert [r["address"] for r in export["requests"]] == [a for a, _ in endpoint.rows()]


def test_200_concurrent_posts_give_200_records(endpoint: Endpoint) -> None:
    async def flood() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post(endpoint.link(f"crowd{i}@example.org"), data=ONE_CLICK)
                    for i in range(200)
                )
            )
        return [a.status_code for a in answers]

    assert asyncio.run(flood()) == [200] * 200
    crowd = [a for a, _ in endpoint.rows() if a.startswith("crowd")]
    assert len(crowd) == 200


def test_every_answered_request_survives_kill_9(tmp_path: Path) -> None:
    running = start(tmp_path)
    try:
        for i in range(20):
            assert (
                httpx.post(running.link(f"durable{i}@example.org"), data=ONE_CLICK).status_code
                == 200
            )
    finally:
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(10)
    assert len(running.rows()) == 20
    logs = (running.process.stderr.read() if running.process.stderr else b"").decode()
    assert "token=" not in logs and "durable" not in logs  # no log line holds a token


def test_unsubscribed_by_post_then_synced_is_never_mailed(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    recipients = write_list(tmp_path / "recipients", 6)
    assert httpx.post(endpoint.link("reader3@example.org"), data=ONE_CLICK).status_code == 200
    env = {
        "MAILER_SERVE_URL": endpoint.base,
        "MAILER_SERVE_API_TOKEN": API_TOKEN,
        "MAILER_LEDGER_DIR": str(tmp_path / "ledger"),
    }
    synced = CliRunner().invoke(app, ["sync", "--recipients", str(recipients)], env=env)
    assert synced.exit_code == 0, synced.output
    assert "suppressed: reader3@example.org" in synced.output
    # The issue the link named goes with the reason: the health report counts it there.
    rows = (recipients / "suppressions.csv").read_text(encoding="utf-8")
    assert "reader3@example.org,one-click unsubscribe (issue 2017-03)," in rows
    again = CliRunner().invoke(app, ["sync", "--recipients", str(recipients)], env=env)
    assert "suppressed:" not in again.output  # idempotent: the cursor moved on
    with Server() as relay:
        sent = send_cli(recipients, {**cli_env(relay.port, tmp_path / "ledger")})
        assert sent.exit_code == 0, sent.output
        assert "reader3@example.org" not in {r.rcpt for r in relay.received}
        assert len(relay.received) == 5
    status = CliRunner().invoke(
        app,
        ["status", str(SAMPLE), "--recipients", str(recipients)],
        env=cli_env(relay.port, tmp_path / "ledger"),
    )
    assert "in suppressions.csv" in status.output


def test_sync_reports_an_unreachable_endpoint_with_exit_1(tmp_path: Path) -> None:
    env = {
        "MAILER_SERVE_URL": f"http://127.0.0.1:{free_port()}",
        "MAILER_SERVE_API_TOKEN": "x",
        "MAILER_LEDGER_DIR": str(tmp_path / "ledger"),
    }
    result = CliRunner().invoke(
        app, ["sync", "--recipients", str(write_list(tmp_path / "r", 2))], env=env
    )
    assert result.exit_code == 1 and "could not be read" in result.output


def test_a_send_refuses_while_the_last_sync_is_too_old(endpoint: Endpoint, tmp_path: Path) -> None:
    recipients = write_list(tmp_path / "recipients", 3)
    with Server() as relay:
        env = {
            **cli_env(relay.port, tmp_path / "ledger"),
            "MAILER_SERVE_URL": endpoint.base,
            "MAILER_SERVE_API_TOKEN": API_TOKEN,
        }
        refused = send_cli(recipients, env)
        assert refused.exit_code == 2 and "mailer sync first" in refused.output
        assert relay.received == []
        assert not (tmp_path / "ledger").exists()  # refused before the ledger was opened
        forced = send_cli(recipients, env, "--allow-stale-sync", "--limit", "1")
        assert forced.exit_code in (0, 1) and len(relay.received) == 1
        assert (
            CliRunner().invoke(app, ["sync", "--recipients", str(recipients)], env=env).exit_code
            == 0
        )
        fresh = send_cli(recipients, env)
        assert fresh.exit_code == 0, fresh.output
        assert len(relay.received) == 3
        stale = {**env, "MAILER_SYNC_MAX_AGE": "0s"}
        time.sleep(1.1)
        assert send_cli(recipients, stale).exit_code == 2


def _sync(running: Endpoint, recipients: Path, ledger: Path) -> Result:
    env = {
        "MAILER_SERVE_URL": running.base,
        "MAILER_SERVE_API_TOKEN": API_TOKEN,
        "MAILER_LEDGER_DIR": str(ledger),
    }
    return CliRunner().invoke(app, ["sync", "--recipients", str(recipients)], env=env)


def _suppressed(recipients: Path) -> list[str]:
    path = recipients / "suppressions.csv"
    return (
        [line.split(",")[0] for line in path.read_text().splitlines()[1:]] if path.exists() else []
    )


def test_only_acknowledged_rows_are_deleted_after_the_grace_period(tmp_path: Path) -> None:
    running = start(tmp_path)
    try:
        for name in ("old", "recent", "unsynced"):
            assert (
                httpx.post(running.link(f"{name}@example.org"), data=ONE_CLICK).status_code == 200
            )
        with sqlite3.connect(running.db) as db:
            db.execute(
                "UPDATE requests SET received = '2020-01-01T00:00:00+00:00' "
                "WHERE address != 'recent@example.org'"
            )
        good = {"Authorization": f"Bearer {API_TOKEN}"}
        page = httpx.get(f"{running.base}/suppressions?after=0", headers=good).json()
        assert len(page["requests"]) == 3 and len(running.rows()) == 3  # reading deletes nothing
        rows = [
            {"id": r["id"], "address": r["address"]}
            for r in page["requests"]
            if r["address"] != "unsynced@example.org"
        ]
        ack = {"database": page["database"], "rows": rows}
        answer = httpx.post(f"{running.base}/suppressions/acknowledge", json=ack, headers=good)
        assert answer.status_code == 200 and answer.json() == {"acknowledged": 2}
        # old: acknowledged and past the grace period, gone; recent: kept 30 days;
        # unsynced: never acknowledged, kept however old.
        assert sorted(a for a, _ in running.rows()) == [
            "recent@example.org",
            "unsynced@example.org",
        ]
        forged = {"database": "another", "rows": rows}
        refused = httpx.post(f"{running.base}/suppressions/acknowledge", json=forged, headers=good)
        assert refused.status_code == 409
    finally:
        running.process.terminate()
        running.process.wait(10)


@pytest.mark.parametrize("how", ["recreated", "restored"])
def test_a_recreated_or_restored_database_loses_no_unsubscribe(tmp_path: Path, how: str) -> None:
    """Sync used to keep a cursor: rows of a new database, ids from 1 again, were skipped
    ("nothing new") and deleted 30 days later without reaching suppressions.csv."""
    recipients, ledger = write_list(tmp_path / "recipients", 3), tmp_path / "ledger"
    running = start(tmp_path)
    try:
        for i in range(5):
            httpx.post(running.link(f"early{i}@example.org"), data=ONE_CLICK)
        backup = tmp_path / "backup.sqlite3"
        with sqlite3.connect(running.db) as db, sqlite3.connect(backup) as copy:
            db.backup(copy)
        assert _sync(running, recipients, ledger).exit_code == 0
    finally:
        running.process.terminate()
        running.process.wait(10)
    running.db.unlink()
    for extra in running.db.parent.glob("requests.sqlite3-*"):
        extra.unlink()
    if how == "restored":
        backup.rename(running.db)
    running = start(tmp_path)
    try:
        assert httpx.post(running.link("late@example.org"), data=ONE_CLICK).status_code == 200
        again = _sync(running, recipients, ledger)
    finally:
        running.process.terminate()
        running.process.wait(10)
    assert again.exit_code == 0, again.output
    assert "late@example.org" in _suppressed(recipients)
    assert len(_suppressed(recipients)) == 6
    if how == "recreated":
        assert "not the one seen before" in " ".join(again.output.split())


def test_unsubscribing_again_after_staff_re_added_the_reader_takes_effect_again(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    recipients, ledger = write_list(tmp_path / "recipients", 3), tmp_path / "ledger"
    httpx.post(endpoint.link("reader1@example.org"), data=ONE_CLICK)
    assert _sync(endpoint, recipients, ledger).exit_code == 0
    assert "reader1@example.org" in _suppressed(recipients)
    (recipients / "suppressions.csv").write_text("email,reason,date\n")  # staff re-add them
    httpx.post(endpoint.link("reader1@example.org"), data=ONE_CLICK)
    assert _sync(endpoint, recipients, ledger).exit_code == 0
    assert _suppressed(recipients) == ["reader1@example.org"]


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=XyZ; charset=utf-8",
        'multipart/form-data; boundary="XyZ"',
        "multipart/form-data; BOUNDARY=XyZ",
        "Multipart/Form-Data; boundary=XyZ",
    ],
)
def test_every_multipart_form_real_clients_send_unsubscribes(
    endpoint: Endpoint, content_type: str
) -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n--XyZ--\r\n"
    )
    address = f"form{abs(hash(content_type))}@example.org"
    answer = httpx.post(
        endpoint.link(address), content=body, headers={"Content-Type": content_type}
    )
    assert answer.status_code == 200
    assert address in [a for a, _ in endpoint.rows()]


def test_health_commits_a_write_and_says_503_when_the_database_cannot_take_one(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "requests.sqlite3")
    now = [100.0]
    assert store.healthy(lambda: now[0])
    for extra in tmp_path.glob("requests.sqlite3*"):
        extra.unlink()
    (tmp_path / "requests.sqlite3").mkdir()  # the file is gone, as on a failed disk
    assert store.healthy(lambda: now[0])  # cached for 10 s
    now[0] += 11
    assert not store.healthy(lambda: now[0])


def test_serve_refuses_a_database_that_is_not_sqlite_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("these are not the requests\n" * 100)
    env = {
        "MAILER_UNSUBSCRIBE_URL": "https://isu.example.org/unsubscribe",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_SERVE_DB": str(tmp_path / "notes.txt"),
    }
    result = CliRunner().invoke(app, ["serve", "--port", str(free_port())], env=env)
    assert result.exit_code == 2 and "MAILER_SERVE_DB" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _hostile(
    answer: Callable[[BaseHTTPRequestHandler], None],
) -> tuple[ThreadingHTTPServer, list[str]]:
    """A server on 127.0.0.1 answering every request with ``answer``; it records the
    Authorization header of each request it gets."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            answer(self)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    return server, seen


def _json(handler: BaseHTTPRequestHandler, data: object) -> None:
    body = json.dumps(data).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _sync_from(port: int, tmp_path: Path) -> tuple[Result, Path]:
    env = {
        "MAILER_SERVE_URL": f"http://127.0.0.1:{port}",
        "MAILER_SERVE_API_TOKEN": API_TOKEN,
        "MAILER_LEDGER_DIR": str(tmp_path / "ledger"),
    }
    recipients = write_list(tmp_path / "r", 2)
    result = CliRunner().invoke(app, ["sync", "--recipients", str(recipients)], env=env)
    return result, recipients


def test_an_endpoint_whose_pages_never_advance_stops_the_sync_before_anything_applies(
    tmp_path: Path,
) -> None:
    """Sync used to loop until the job's time limit, appending addresses never listed."""
    counter = iter(range(10**6))

    def same_ids(handler: BaseHTTPRequestHandler) -> None:
        n = next(counter)  # new addresses each time, the same ids
        rows = [{"id": i, "address": f"never{n}.{i}@example.org"} for i in range(1, 1001)]
        _json(handler, {"database": "db", "requests": rows})

    server, seen = _hostile(same_ids)
    try:
        result, recipients = _sync_from(server.server_address[1], tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    # The first full page applies and is acknowledged; the next repeats its ids: stop.
    assert result.exit_code == 1, result.output
    assert "not requests after the cursor" in " ".join(result.output.split())
    assert len(seen) == 3 and len(_suppressed(recipients)) == 1000


def test_a_page_larger_than_asked_is_refused_whole(tmp_path: Path) -> None:
    rows = [{"id": i, "address": f"flood{i}@example.org"} for i in range(1, 1502)]
    server, _ = _hostile(lambda h: _json(h, {"database": "db", "requests": rows}))
    try:
        result, recipients = _sync_from(server.server_address[1], tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1 and "where 1000 were asked" in " ".join(result.output.split())
    assert _suppressed(recipients) == []


def test_no_credential_follows_a_redirect(tmp_path: Path) -> None:
    other, to_other = _hostile(lambda h: _json(h, {"database": "x", "requests": []}))

    def moved(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("Location", f"http://127.0.0.1:{other.server_address[1]}/x")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server, _ = _hostile(moved)
    try:
        result, _ = _sync_from(server.server_address[1], tmp_path)
    finally:
        for running in (server, other):
            running.shutdown()
            running.server_close()
    assert result.exit_code == 1 and "redirect (307)" in result.output
    assert "MAILER_SERVE_URL" in result.output and to_other == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b"[1, 2]",
        b'{"requests": "x"}',
        b'{"requests": [{"address": "a@example.org"}], "cursor": "abc"}',
        b'{"database": "d", "requests": [{"id": "1", "address": "a@example.org"}]}',
        b"x" * 3_000_000,
    ],
)
def test_sync_refuses_an_export_it_does_not_understand(tmp_path: Path, body: bytes) -> None:
    class Broken(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Broken)
    Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        env = {
            "MAILER_SERVE_URL": f"http://127.0.0.1:{server.server_address[1]}",
            "MAILER_SERVE_API_TOKEN": "x",
            "MAILER_LEDGER_DIR": str(tmp_path / "ledger"),
        }
        recipients = write_list(tmp_path / "r", 2)
        result = CliRunner().invoke(app, ["sync", "--recipients", str(recipients)], env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1 and "could not be read" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (recipients / "suppressions.csv").exists()


def test_tokens_hold_no_address_and_old_ones_keep_working(endpoint: Endpoint) -> None:
    token = make_token(SECRET.encode(), "Claire.Moreau@example.org", "2017-03")
    assert "moreau" not in base64.urlsafe_b64decode(token + "==").decode("latin-1").lower()
    assert 60 <= len(token) <= 90  # a typical address
    longest = make_token(SECRET.encode(), "x" * 64 + "@" + "d" * 185 + ".org", "2017-03")
    assert len(longest) <= 400  # the longest legal address (254 octets)
    old = legacy_token(SECRET.encode(), "old.reader@example.org")
    answer = httpx.post(f"{endpoint.url}?token={old}&issue=2016-11&lang=en", data=ONE_CLICK)
    assert answer.status_code == 200
    assert ("old.reader@example.org", "2016-11") in endpoint.rows()


def test_a_test_copys_link_unsubscribes_nobody(endpoint: Endpoint) -> None:
    token = make_token(SECRET.encode(), "ambassador.moreau@example.org", "2017-03", test=True)
    before = endpoint.rows()
    for method in ("GET", "POST"):
        answer = httpx.request(
            method, f"{endpoint.url}?token={token}&lang=fr", data=ONE_CLICK if method else None
        )
        assert answer.status_code == 200 and "copie de test" in answer.text
    assert endpoint.rows() == before


def test_a_test_copy_can_unsubscribe_nobody_on_the_list(endpoint: Endpoint, tmp_path: Path) -> None:
    """--test-to addressed the copy to a reader's token: a colleague clicking Unsubscribe
    (or Gmail's button) in the test copy removed the French ambassador from the list."""
    with Server() as relay:
        env = {
            **cli_env(relay.port, tmp_path / "ledger"),
            "MAILER_UNSUBSCRIBE_URL": endpoint.url,
            "MAILER_UNSUBSCRIBE_SECRET": SECRET,
            "MAILER_BOUNCE_SECRET": "bounce-key",
        }
        args = ["send", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS)]
        result = CliRunner().invoke(app, [*args, "--test-to", "editor@example.org"], env=env)
        assert result.exit_code == 0, result.output
        received = list(relay.received)
    assert len(received) == 9
    before = endpoint.rows()
    readers = [line.split(",")[0].lower() for line in _list_lines()]
    for copy in received:
        message = copy.message()
        assert str(message["To"]) == "editor@example.org"
        raw = copy.data.decode("utf-8", "replace").lower()
        assert not [reader for reader in readers if reader in raw.split("\r\n\r\n", 1)[0]]
        targets = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
        assert targets[0].startswith("mailto:unsubscribe+2017-03.test@")
        answer = httpx.post(targets[1], data=ONE_CLICK)
        assert answer.status_code == 200
        assert "test" in answer.text.lower() or "prueba" in answer.text.lower()
    assert endpoint.rows() == before


def _list_lines() -> list[str]:
    return [
        line
        for path in sorted(SAMPLE_RECIPIENTS.glob("*.csv"))
        if path.name != "suppressions.csv"
        for line in path.read_text().splitlines()[1:]
    ]


def test_an_acknowledgement_never_marks_a_newer_request_that_reused_an_id(
    tmp_path: Path,
) -> None:
    """A backup restored between a sync's read and its acknowledgement gave id 2 to a new
    request; acknowledging ids 1-3 marked it, and it was never exported."""
    path = tmp_path / "requests.sqlite3"
    store = Store(path)
    store.record("a@example.org", "2017-03")
    backup = tmp_path / "backup.sqlite3"
    with sqlite3.connect(path) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    store.record("b@example.org", "2017-03")
    store.record("c@example.org", "2017-03")
    read = [(r["id"], r["address"]) for r in store.unacknowledged(0, 1000)]
    for extra in tmp_path.glob("requests.sqlite3*"):
        extra.unlink()
    backup.rename(path)  # restored, same identity
    restored = Store(path)
    restored.record("new.reader@example.org", "2017-03")  # takes id 2 again
    assert restored.acknowledge(restored.identity, read, datetime.now(UTC)) == (1, 0)
    assert [r["address"] for r in restored.unacknowledged(0, 1000)] == ["new.reader@example.org"]


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_a_one_click_post_without_a_form_type_still_unsubscribes(
    endpoint: Endpoint, content_type: str | None
) -> None:
    address = f"plain-{content_type or 'none'}@example.org".replace("/", "-")
    headers = {"Content-Type": content_type} if content_type else {}
    answer = httpx.post(
        endpoint.link(address), content=b"List-Unsubscribe=One-Click", headers=headers
    )
    assert answer.status_code == 200 and address in [a for a, _ in endpoint.rows()]


def test_sync_reads_until_an_empty_page_whatever_the_page_size(tmp_path: Path) -> None:
    """An endpoint paging by 500 ended the sync as a success with 700 requests unread."""
    pending: list[dict[str, Any]] = [
        {"id": i, "address": f"p{i}@example.org"} for i in range(1, 1201)
    ]

    def by_500(handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "POST":
            length = int(handler.headers.get("Content-Length", "0"))
            handler.rfile.read(length)
            _json(handler, {"acknowledged": 0})
            return
        after = int(handler.path.split("after=")[1].split("&")[0])
        _json(
            handler, {"database": "db", "requests": [r for r in pending if r["id"] > after][:500]}
        )

    server, _ = _hostile(by_500)
    try:
        result, recipients = _sync_from(server.server_address[1], tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert len(_suppressed(recipients)) == 1200


def test_the_first_sync_after_the_upgrade_reapplies_nothing_the_old_one_applied(
    tmp_path: Path,
) -> None:
    """Staff had re-added came.back@, unsubscribed and synced before the upgrade; the new
    export of every unacknowledged row suppressed them again."""
    old = sqlite3.connect(tmp_path / "requests.sqlite3")
    old.execute(
        "CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, address TEXT NOT NULL "
        "UNIQUE COLLATE NOCASE, issue TEXT NOT NULL, received TEXT NOT NULL)"
    )
    rows = [
        ("came.back", "2026-11-01T00:00:00+00:00"),
        # Id 2, yet received after the old sync ran (a database recreated since): unseen.
        ("after.recreate", "2026-11-05T00:00:00+00:00"),
        ("also.applied", "2026-11-01T00:00:00+00:00"),
        ("new", "2026-11-01T00:00:00+00:00"),
    ]
    for name, received in rows:
        old.execute(
            "INSERT INTO requests (address, issue, received) VALUES (?, '2017-03', ?)",
            (f"{name}@example.org", received),
        )
    old.commit()
    old.close()
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    state = '{"endpoint": {"cursor": 3, "last_success": "2026-11-02T00:00:00+00:00"}}'
    (ledger / "sync-state.json").write_text(state)
    recipients = write_list(tmp_path / "recipients", 2)
    running = start(tmp_path)
    try:
        first = _sync(running, recipients, ledger)
        assert first.exit_code == 0, first.output
        assert _suppressed(recipients) == ["after.recreate@example.org", "new@example.org"]
        good = {"Authorization": f"Bearer {API_TOKEN}"}
        page = httpx.get(f"{running.base}/suppressions?after=0", headers=good).json()
        assert page["requests"] == []  # all four acknowledged
    finally:
        running.process.terminate()
        running.process.wait(10)


def test_a_password_in_the_endpoint_url_is_never_printed(tmp_path: Path) -> None:
    env = {
        "MAILER_SERVE_URL": f"https://staff:Pr0xyPassw0rd@127.0.0.1:{free_port()}",
        "MAILER_SERVE_API_TOKEN": "x",
        "MAILER_LEDGER_DIR": str(tmp_path / "ledger"),
    }
    recipients = write_list(tmp_path / "r", 2)
    result = CliRunner().invoke(app, ["sync", "--recipients", str(recipients)], env=env)
    assert result.exit_code == 1 and "Pr0xyPassw0rd" not in result.output


def test_an_endpoint_dripping_its_answer_cannot_hold_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncing, "ANSWER_SECONDS", 1.0)

    server, _ = _hostile(drip)  # a byte every 0.2 s, 10 s at most
    started = time.monotonic()
    try:
        result, _ = _sync_from(server.server_address[1], tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1 and "still coming after" in result.output
    assert time.monotonic() - started < 8


def test_the_endpoint_says_where_it_listens_and_warns_without_an_api_token(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_UNSUBSCRIBE_URL=f"http://127.0.0.1:{port}/unsubscribe",  # a local trial
        MAILER_UNSUBSCRIBE_SECRET=SECRET,
        MAILER_SERVE_DB=str(tmp_path / "requests.sqlite3"),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "serve"],  # no --port: the URL's
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert f"on http://127.0.0.1:{port}/unsubscribe" in out
    assert "MAILER_SERVE_API_TOKEN is not set" in err and "401" in err


def test_an_issue_an_export_names_reaches_the_reason_only_when_it_is_an_issue_id(
    tmp_path: Path,
) -> None:
    """The export's issue goes into suppressions.csv's reason; a forged one (a newline, a
    closing parenthesis to fake another issue, a number) must not forge a row or a count."""
    rows: list[dict[str, Any]] = [
        {"id": 1, "address": "a@example.org", "issue": "2017-03"},
        {"id": 2, "address": "b@example.org", "issue": "x) (issue 2017-06"},
        {"id": 3, "address": "c@example.org", "issue": "2017-03\nevil@example.org,forged"},
        {"id": 4, "address": "d@example.org", "issue": 17},
    ]

    def export(handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "POST":
            handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
            _json(handler, {"acknowledged": 4})
            return
        after = int(handler.path.split("after=")[1].split("&")[0])
        _json(handler, {"database": "db", "requests": [r for r in rows if r["id"] > after]})

    server, _ = _hostile(export)
    try:
        result, recipients = _sync_from(server.server_address[1], tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    lines = (recipients / "suppressions.csv").read_text(encoding="utf-8").splitlines()
    reasons = {line.split(",")[0]: line.split(",")[1] for line in lines[1:]}
    assert reasons == {
        "a@example.org": "one-click unsubscribe (issue 2017-03)",
        "b@example.org": "one-click unsubscribe",
        "c@example.org": "one-click unsubscribe",
        "d@example.org": "one-click unsubscribe",
    }
    assert len(lines) == 5  # no forged row
