"""Benchmark: sending throughput against Postfix's smtp-sink on 127.0.0.1.

Run on demand: ``.venv/bin/python bench/send.py [RECIPIENTS]`` (default 20,000).
Needs Debian's ``postfix`` package for ``smtp-sink`` and ``smtp-source`` (the
postfix daemon is never started). Prints, in one run:

(a) ``mailer send`` end to end (load, compose, send, ledger) with 8 connections,
    and (a') the same with DKIM signing;
(d) the send in a fresh process through ``pipeline.deliver`` twice: DATA in wire
    form (``smtp._wire_data``, the default) and aiosmtplib's public ``data()``;
(b) the raw ceiling of aiosmtplib: 8 persistent connections sending pre-built bytes;
(c) ``smtp-source -s 8`` sending messages of the same size;

and the ratios between them. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from compose import generate  # noqa: E402  (the compose benchmark's list generator)

CONNECTIONS = 8
SAMPLE = ROOT / "examples" / "bulletins" / "2017-03"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen([sink, *user, f"127.0.0.1:{port}", "1024"])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise SystemExit("smtp-sink did not start")


def bench_env(port: int, work: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The MAILER_* settings of every run: smtp-sink, 8 connections, a fresh ledger."""
    shutil.rmtree(work / "ledger", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_SMTP_HOST="127.0.0.1",
        MAILER_SMTP_PORT=str(port),
        MAILER_SMTP_SECURITY="none",
        MAILER_FROM="ISU-CCM <newsletter@isu.example.org>",
        MAILER_UNSUBSCRIBE_URL="https://isu.example.org/unsubscribe",
        MAILER_UNSUBSCRIBE_SECRET="bench-secret",
        MAILER_UNSUBSCRIBE_MAILTO="unsubscribe@isu.example.org",
        MAILER_LEDGER_DIR=str(work / "ledger"),
        MAILER_MAX_CONNECTIONS=str(CONNECTIONS),
        **(extra or {}),
    )
    return env


def mailer_end_to_end(
    port: int, recipients: Path, work: Path, extra: dict[str, str] | None = None
) -> tuple[float, int, int]:
    """(seconds, messages, average size) for `mailer send --yes`, as staff run it."""
    env = bench_env(port, work, extra)
    command = [
        sys.executable,
        "-m",
        "mailer",
        "send",
        str(SAMPLE),
        "--recipients",
        str(recipients),
        "--yes",
    ]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, cwd=work)
    seconds = time.perf_counter() - start
    sys.path.insert(0, str(ROOT))
    from mailer import pipeline
    from mailer.ledger import LedgerDir, Outcome

    records = LedgerDir(work / "ledger").records("2017-03")
    sent = sum(1 for record in records if record.outcome == Outcome.SENT)
    from mailer.settings import Settings

    settings = Settings(_env_file=None, MAILER_FROM="ISU <news@isu.example.org>")  # type: ignore[call-arg]
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=recipients)
    job.limit = 200
    size = sum(len(m.data) for m in job.messages()) // 200
    return seconds, sent, size


def deliver_in_process(port: int, recipients: Path, work: Path, wire_data: bool) -> float:
    """Seconds for a fresh process to send the list through ``pipeline.deliver`` with
    DATA in wire form or through aiosmtplib's public data() (the connection's option)."""
    env = bench_env(port, work)
    command = [sys.executable, __file__, "--deliver", "wire" if wire_data else "public"]
    start = time.perf_counter()
    subprocess.run([*command, str(recipients)], env=env, check=True, cwd=work)
    return time.perf_counter() - start


def _deliver(mode: str, recipients: Path) -> None:
    """The child of :func:`deliver_in_process`."""
    from mailer import pipeline, smtp
    from mailer.delivery import Sender
    from mailer.settings import load_settings

    settings = load_settings()
    job = pipeline.prepare(SAMPLE, settings, recipients_dir=recipients, dry_run=False)
    with pipeline.open_ledger(job, settings) as ledger:
        state = ledger.state()
        pending = (job.composer.compose(r) for r in job.recipients if not state.is_done(r.email))
        sender = Sender(
            settings,
            ledger,
            connect=lambda: smtp.AioSmtpConnection(settings.smtp, None, wire_data=mode == "wire"),
        )
        asyncio.run(sender.run(pending, state.attempts))


async def raw_aiosmtplib(port: int, count: int, data: bytes) -> float:
    """Seconds for 8 persistent aiosmtplib connections to send ``count`` pre-built messages."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        while not queue.empty():
            index = queue.get_nowait()
            await smtp.sendmail("news@isu.example.org", [f"r{index}@example.org"], data)
        await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return time.perf_counter() - start


def smtp_source(port: int, count: int, size: int) -> float:
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    start = time.perf_counter()
    subprocess.run(
        [
            source,
            "-s",
            str(CONNECTIONS),
            "-m",
            str(count),
            "-l",
            str(size),
            "-f",
            "news@isu.example.org",
            "-t",
            "reader@example.org",
            f"127.0.0.1:{port}",
        ],
        check=True,
    )
    return time.perf_counter() - start


def main() -> None:
    if sys.argv[1:2] == ["--deliver"]:
        _deliver(sys.argv[2], Path(sys.argv[3]))
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            recipients = work / "recipients"
            generate(recipients, count)
            seconds_a, sent, size = mailer_end_to_end(port, recipients, work)
            seconds_w = deliver_in_process(port, recipients, work, wire_data=True)
            seconds_p = deliver_in_process(port, recipients, work, wire_data=False)
            from mailer.signing import generate_key

            key, _ = generate_key(work / "dkim", "bench", "isu.example.org")
            dkim_env = {
                "MAILER_DKIM_DOMAIN": "isu.example.org",
                "MAILER_DKIM_SELECTOR": "bench",
                "MAILER_DKIM_KEY_FILE": str(key),
            }
            seconds_d, sent_d, _ = mailer_end_to_end(port, recipients, work, dkim_env)
            data = (b"Subject: bench\r\n\r\n" + b"x" * 76 + b"\r\n") * (size // 96)
            seconds_b = asyncio.run(raw_aiosmtplib(port, count, data))
            seconds_c = smtp_source(port, count, size)
    finally:
        sink.terminate()
        sink.wait()
    a, b, c = sent / seconds_a, count / seconds_b, count / seconds_c
    d = sent_d / seconds_d
    w, p = count / seconds_w, count / seconds_p
    print(
        f"messages: {count} ({sent} sent by mailer), ~{size / 1024:.1f} KB each, "
        f"{CONNECTIONS} connections, smtp-sink on 127.0.0.1"
    )
    print(f"(a) mailer send, end to end      {a:8.0f} msgs/s  ({seconds_a:.1f} s)")
    print(f"(a') the same, DKIM-signed        {d:8.0f} msgs/s  ({seconds_d:.1f} s)")
    print(f"(d) deliver, DATA in wire form   {w:8.0f} msgs/s  ({seconds_w:.1f} s)")
    print(f"(d') deliver, public data()      {p:8.0f} msgs/s  ({seconds_p:.1f} s)")
    print(f"(b) aiosmtplib, pre-built bytes  {b:8.0f} msgs/s  ({seconds_b:.1f} s)")
    print(f"(c) smtp-source -s {CONNECTIONS}            {c:8.0f} msgs/s  ({seconds_c:.1f} s)")
    print(f"a/b = {a / b:.0%}   a'/b = {d / b:.0%}   a/c = {a / c:.0%}   b/c = {b / c:.0%}")
    print(f"DATA in wire form over public data(): {w / p - 1:+.0%} (d/d')")


if __name__ == "__main__":
    main()
