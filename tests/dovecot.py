"""A real IMAP server for the tests: Debian's Dovecot 2.3, started as a plain process on
127.0.0.1 with a temporary configuration and mail folder (never the system service)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .smtp_server import free_port

USER, PASSWORD = "bulletin", "imap-test-password"

CONFIG = """listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
mail_location = maildir:{root}/mail/%u
default_internal_user = nobody
default_login_user = nobody
protocols = imap
auth_mechanisms = plain login xoauth2
{oauth_passdb}passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""


class Dovecot:
    """``with Dovecot(binary) as imap:`` a private IMAP server; ``imap.port``."""

    def __init__(self, binary: str, introspection_url: str | None = None) -> None:
        """With ``introspection_url``, XOAUTH2 sign-ins are checked there (RFC 7662)."""
        self.binary = binary
        self.introspection_url = introspection_url
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-", dir="/tmp"))

    def __enter__(self) -> Dovecot:
        root = self.root
        root.chmod(0o755)  # nobody must reach the passwd file and the mail folder
        for name in ("run", "state", "mail"):
            (root / name).mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        oauth = ""
        if self.introspection_url:
            (root / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\nintrospection_url = {self.introspection_url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
            )
            oauth = (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2\n"
                f"  args = {root}/oauth2.conf.ext\n}}\n"
            )
        (root / "dovecot.conf").write_text(
            CONFIG.format(root=root, port=self.port, oauth_passdb=oauth)
        )
        # In the foreground, in a process group of its own: the teardown kills the whole
        # group at once (a polite SIGTERM makes Dovecot wait about 3 s for its children).
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(root / "dovecot.conf")], start_new_session=True
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        log_file = root / "dovecot.log"
        log = log_file.read_text(errors="replace") if log_file.exists() else "no log written"
        self.__exit__()
        raise RuntimeError(log)

    def bytes_sent(self) -> int:
        """What the server sent its clients so far, by its own logout lines (``out=N``)."""
        log = (self.root / "dovecot.log").read_text(errors="replace")
        return sum(int(n) for n in re.findall(r"Logged out in=\d+ out=(\d+)", log))

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
