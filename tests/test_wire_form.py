"""The bytes after DATA are the message, dot-stuffed: a server reads back the message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailer import pipeline
from mailer.delivery import RetryPolicy
from mailer.message import TemplateBuilder, qp_piece, raw_header

from .conftest import text_of
from .helpers import settings_for
from .smtp_server import Server


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n")
    lines = wire[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_values_and_pieces_starting_lines_with_a_dot_are_stuffed() -> None:
    out = TemplateBuilder()
    out.literal(b"X-Name: ")
    out.hole("header", raw_header)
    out.literal(b"\n\n")
    out.body(".first line\nthen MAILERSLOT0Z\n.last\n", {0: "name"}, qp_piece)
    template = out.build()
    values = {"header": ".dot header", "name": ". leading dot and " + "x" * 90}
    wire = template.fill(values, "wire")
    assert b"\r\n..first line" in wire and b"\r\n.. leading dot" in wire
    assert b"\r\n..last\r\n" in wire and b"X-Name: .dot header" in wire
    assert _unstuff(wire) == template.fill(values, "crlf")


def test_item_line_starting_with_a_dot_arrives_intact(
    copy_sample: Callable[[], tuple[Path, Path]], tmp_path: Path
) -> None:
    bulletin, recipients = copy_sample()
    item = bulletin / "items" / "03-oslo-process-ten-years.md"
    item.write_text(item.read_text() + "\n.NET and .org are not news.\n", encoding="utf-8")
    with Server() as server:
        settings = settings_for(server.port, tmp_path)
        job = pipeline.prepare(bulletin, settings, recipients_dir=recipients, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            pipeline.deliver(job, settings, ledger, ledger.state(), policy=RetryPolicy())
        assert len(server.received) == 13
        for received in server.received:
            assert "\n.NET and .org are not news." in text_of(received.message()).replace("\r", "")
