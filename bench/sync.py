"""Benchmark: `mailer sync` of a large inbound mailbox (a real Dovecot on 127.0.0.1).

Run on demand as root with Debian's dovecot-imapd installed:
``.venv/bin/python bench/sync.py [N] [LARGE]`` (default 10,000 and 50). Fills the
mailbox with N messages (bounces, unsubscribe requests and automatic replies, in
turn) and LARGE people's replies with an 8.5 MB attachment each, by IMAP APPEND,
then times one sync and a second one (the replies are left for staff), with the
process's peak memory. Asserts nothing.
"""

from __future__ import annotations

import base64
import imaplib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.inbox import read_mailbox  # noqa: E402  (after the path is set)
from mailer.settings import Settings  # noqa: E402
from tests.dovecot import PASSWORD, USER, Dovecot  # noqa: E402

AUTO = (
    "From: r{i}@example.org\r\nTo: bounces@isu.example.org\r\nSubject: Automatic reply\r\n"
    "Auto-Submitted: auto-replied\r\n\r\nAway.\r\n"
)
UNSUB = (
    "From: u{i}@example.org\r\nTo: unsubscribe@isu.example.org\r\nSubject: unsubscribe\r\n"
    "\r\nunsubscribe\r\n"
)
BOUNCE = (
    "From: MAILER-DAEMON@mx.example.com\r\nTo: bounces@isu.example.org\r\nSubject: Undelivered\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
    "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; g{i}@example.com\r\n"
    "Action: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
)


LARGE = (
    "From: p{i}@example.org\r\nTo: bulletin@isu.example.org\r\nSubject: Re: bulletin\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=R\r\n\r\n"
    "--R\r\nContent-Type: text/plain\r\n\r\nOur letter is attached.\r\n"
    "--R\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    large = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    blob = (base64.encodebytes(os.urandom(6_300_000)).replace(b"\n", b"\r\n")) + b"--R--\r\n"
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    with Dovecot(binary) as imap, tempfile.TemporaryDirectory() as tmp:
        client = imaplib.IMAP4("127.0.0.1", imap.port)
        client.login(USER, PASSWORD)
        started = time.perf_counter()
        for i in range(count):
            template = (AUTO, UNSUB, BOUNCE)[i % 3]
            client.append("INBOX", None, None, template.format(i=i).encode())
        for i in range(large):
            client.append("INBOX", None, None, LARGE.format(i=i).encode() + blob)
        client.logout()
        filled = time.perf_counter() - started
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            imap_host="127.0.0.1",
            imap_port=imap.port,
            imap_security="none",
            imap_username=USER,
            imap_password=SecretStr(PASSWORD),
            unsubscribe_mailto="unsubscribe@isu.example.org",
            ledger_dir=Path(tmp) / "ledger",
        )
        (Path(tmp) / "recipients").mkdir()
        started = time.perf_counter()
        result = read_mailbox(settings, Path(tmp) / "recipients")
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = read_mailbox(settings, Path(tmp) / "recipients", result.left)
        second = time.perf_counter() - started
        sent = imap.bytes_sent()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = count + large
    print(f"filled {count:,} messages and {large} of 8.5 MB in {filled:.1f} s (IMAP APPEND)")
    print(
        f"mailer sync: {seconds:.1f} s for {total:,} messages "
        f"({total / seconds:,.0f} a second); effects: {result.effects}; error: {result.error}"
    )
    print(f"second sync: {second:.2f} s; effects: {again.effects}")
    print(f"the server sent {sent / 1e6:,.1f} MB in all; peak memory {peak:,.0f} MB")


if __name__ == "__main__":
    main()
