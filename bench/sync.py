"""Benchmark: `mailer sync` of a large inbound mailbox (a real Dovecot on 127.0.0.1).

Run on demand as root with Debian's dovecot-imapd installed:
``.venv/bin/python bench/sync.py [N]`` (default 10,000). Fills the mailbox with
N messages (bounces of a real ledger, unsubscribe requests and automatic
replies, in turn) by IMAP APPEND, then times one sync. Asserts nothing.
"""

from __future__ import annotations

import imaplib
import shutil
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    with Dovecot(binary) as imap, tempfile.TemporaryDirectory() as tmp:
        client = imaplib.IMAP4("127.0.0.1", imap.port)
        client.login(USER, PASSWORD)
        started = time.perf_counter()
        for i in range(count):
            template = (AUTO, UNSUB, BOUNCE)[i % 3]
            client.append("INBOX", None, None, template.format(i=i).encode())
        client.logout()
        filled = time.perf_counter() - started
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            imap_host="127.0.0.1",
            imap_port=imap.port,
            imap_security="none",
            imap_username=USER,
            imap_password=PASSWORD,
            unsubscribe_mailto="unsubscribe@isu.example.org",
            ledger_dir=Path(tmp) / "ledger",
        )
        (Path(tmp) / "recipients").mkdir()
        started = time.perf_counter()
        result = read_mailbox(settings, Path(tmp) / "recipients")
        seconds = time.perf_counter() - started
    print(f"filled {count:,} messages in {filled:.1f} s (IMAP APPEND)")
    print(
        f"mailer sync: {seconds:.1f} s for {count:,} messages "
        f"({count / seconds:,.0f} a second); effects: {result.effects}; error: {result.error}"
    )


if __name__ == "__main__":
    main()
