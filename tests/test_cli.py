"""The command line as a person meets it: help, version, order of the work, and the
endpoint's start (where it listens, a port already taken)."""

from __future__ import annotations

import re
import socket

from typer.testing import CliRunner

from mailer import __version__
from mailer.cli import app
from mailer.serve import DEFAULT_PORT, listen_address

from .conftest import make_settings


def test_bare_mailer_shows_the_help_and_is_not_an_error() -> None:
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 0 and "Commands:" in result.output


def test_version_prints_the_packages_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mailer {__version__}"


def test_commands_are_listed_in_the_order_of_the_work_with_whole_summaries() -> None:
    help_text = CliRunner().invoke(app, ["--help"]).output
    listed = re.findall(r"^  ([a-z-]+)  +(.+)$", help_text.split("Commands:")[1], re.MULTILINE)
    names = [name for name, _ in listed]
    work = ["check", "translations", "send", "status", "publish", "dispatch", "serve", "sync"]
    assert [name for name in names if name in work] == work  # in the order of the work
    assert names.index("unsubscribe") > names.index("sync")
    assert all(not summary.endswith("...") for _, summary in listed), listed


def test_options_read_as_words_not_type_names() -> None:
    help_text = CliRunner().invoke(app, ["send", "--help"]).output
    assert "--segment SEGMENT" in help_text and "--test-to ADDRESS" in help_text
    assert "--limit N" in help_text
    for type_name in ("<list[str]>", "<int range>", "<str>", "{bulletin}"):
        assert type_name not in help_text, type_name


def test_the_endpoint_listens_where_the_links_point_when_they_point_here() -> None:
    local = make_settings(unsubscribe_url="http://127.0.0.1:8123/unsubscribe")
    assert listen_address(local, None, None) == ("127.0.0.1", 8123)
    public = make_settings(unsubscribe_url="https://bulletin.example.org/unsubscribe")
    assert listen_address(public, None, None) == ("127.0.0.1", DEFAULT_PORT)
    assert DEFAULT_PORT not in (25, 465, 587, 1025, 2525, 8025)  # no mail tool's port
    assert listen_address(public, "127.0.0.1", 9000) == ("127.0.0.1", 9000)


def test_a_port_already_taken_is_one_line_and_exit_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"MAILER_UNSUBSCRIBE_SECRET": "s", "MAILER_UNSUBSCRIBE_URL": "https://x.example/u"}
        result = CliRunner().invoke(app, ["serve", "--port", str(port)], env=env)
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
