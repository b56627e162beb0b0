"""Benchmark: one-click unsubscribe requests per second, each durably committed.

Run on demand (``.venv/bin/python bench/serve.py [REQUESTS]``, default 3,000);
starts ``mailer serve`` on 127.0.0.1 and drives it with 50 concurrent clients
(httpx), each POST a different reader. Real load is a few a minute: the figure
shows headroom. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.unsubscribe import make_token  # noqa: E402  (after the path is set)

CLIENTS = 50
SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drive(url: str, count: int) -> float:
    tokens = [make_token(SECRET.encode(), f"reader{i}@example.org") for i in range(count)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for token in tokens:
        queue.put_nowait(token)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            token = queue.get_nowait()
            answer = await http.post(
                f"{url}?token={token}&lang=en", data={"List-Unsubscribe": "One-Click"}
            )
            answer.raise_for_status()

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "requests.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        env.update(
            MAILER_UNSUBSCRIBE_URL=f"http://127.0.0.1:{port}/unsubscribe",
            MAILER_UNSUBSCRIBE_SECRET=SECRET,
            MAILER_SERVE_DB=str(db),
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "mailer", "serve", "--port", str(port)], env=env
        )
        try:
            for _ in range(100):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            seconds = asyncio.run(drive(f"http://127.0.0.1:{port}/unsubscribe", count))
        finally:
            server.terminate()
            server.wait(10)
        with sqlite3.connect(db) as check:
            recorded = check.execute("SELECT count(*) FROM requests").fetchone()[0]
    print(
        f"{count:,} one-click POSTs from {CLIENTS} clients: {seconds:.1f} s, "
        f"{count / seconds:,.0f} requests/s, {recorded:,} recorded (synchronous=FULL)"
    )


if __name__ == "__main__":
    main()
