"""The dry run: a sink of the message stream that writes files instead of sending.

It writes ``<out>/<id>.mbox``, every message a real send would submit, byte for
byte (but with the mbox's LF line ends), and ``<out>/<id>.html``, a
self-contained page showing each variant as its readers will see it, its plain
text beside it, and every recipient with their variant.

Memory stays flat: messages are written as they arrive and recipient rows go to
a temporary file, joined to the page at the end (variants are few; readers many).
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mailer.compose import Composer, OutgoingMessage, Variant, VariantKey
from mailer.recipients import Recipient, RecipientList


@dataclass
class VariantSummary:
    """One variant as the preview shows it: its first reader and how many there are."""

    key: VariantKey
    sample: Recipient
    index: int
    count: int = 0


@dataclass
class PreviewResult:
    """What the dry run wrote."""

    mbox: Path
    page: Path
    messages: int = 0
    variants: dict[VariantKey, VariantSummary] = field(default_factory=dict)


class MboxWriter:
    """Appends messages to an mbox file (mboxo: a ``From `` line starts each message).

    The composer never lets a body line start with ``From `` (see
    ``message.qp``), so no escaping is needed and none alters a message; the
    guard below only protects the file if that ever changed.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.stamp = time.asctime(time.gmtime()).encode()

    def write(self, body: bytes) -> None:
        """Append one message given with LF line ends."""
        if b"\nFrom " in body:
            body = body.replace(b"\nFrom ", b"\n>From ")
        self.handle.write(b"From MAILER-DAEMON " + self.stamp + b"\n" + body)
        if not body.endswith(b"\n"):
            self.handle.write(b"\n")
        self.handle.write(b"\n")


def write_preview(
    composer: Composer,
    recipients: RecipientList,
    out_dir: Path,
    messages: Iterable[OutgoingMessage] | None = None,
) -> PreviewResult:
    """Consume the message stream into the mbox and the preview page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    issue = composer.bulletin.id
    result = PreviewResult(mbox=out_dir / f"{issue}.mbox", page=out_dir / f"{issue}.html")
    stream = composer.stream(recipients) if messages is None else messages
    mbox_tmp = result.mbox.with_suffix(".mbox.partial")
    with (
        mbox_tmp.open("wb") as mbox_handle,
        tempfile.TemporaryFile("w+", encoding="utf-8") as rows,
    ):
        writer = MboxWriter(mbox_handle)
        for message in stream:
            writer.write(message.mbox_data())
            result.messages += 1
            summary = result.variants.get(message.variant)
            if summary is None:
                summary = result.variants[message.variant] = VariantSummary(
                    message.variant, message.recipient, len(result.variants)
                )
            summary.count += 1
            rows.write(_recipient_row(message, summary.index))
        rows.seek(0)
        _write_page(result, composer, recipients, rows)
    mbox_tmp.replace(result.mbox)
    return result


def _recipient_row(message: OutgoingMessage, variant_index: int) -> str:
    r = message.recipient
    cells = (r.email, r.name, r.organization, ", ".join(r.segments), r.language)
    tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
    label = html.escape(message.variant.label())
    return f'<tr>{tds}<td><a href="#variant-{variant_index}">{label}</a></td></tr>\n'


def _viewable(variant: Variant, body: str) -> str:
    """The HTML with embedded images as data: URLs, since a browser cannot see cid: parts."""
    for image in variant.images:
        data = base64.b64encode(image.path.read_bytes()).decode()
        body = body.replace(f"cid:{image.content_id}", f"data:{image.mime_type};base64,{data}")
    return body


_PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; padding: 16px; color: #1f2933;
       background: #f6f7f9; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 18px; margin: 32px 0 8px; }
.note { background: #fff4d6; border: 1px solid #e8c96b; padding: 8px 12px; border-radius: 4px; }
.panes { display: flex; flex-wrap: wrap; gap: 16px; }
.pane { flex: 1 1 320px; min-width: 0; max-width: 700px; }
iframe { width: 100%; height: 900px; border: 1px solid #c5ccd3; background: #fff; }
pre { white-space: pre; overflow: auto; height: 900px; margin: 0; padding: 12px; background: #fff;
      border: 1px solid #c5ccd3; font-size: 12px; }
table.list { border-collapse: collapse; width: 100%; background: #fff; font-size: 14px; }
table.list td, table.list th { border: 1px solid #dfe3e8; padding: 4px 8px; text-align: left; }
.meta { color: #52606d; font-size: 14px; }
.scroll { overflow-x: auto; }
"""


def _write_page(
    result: PreviewResult, composer: Composer, recipients: RecipientList, rows: Iterable[str]
) -> None:
    bulletin = composer.bulletin
    esc = html.escape
    segments = ", ".join(f"{esc(s)}: {n}" for s, n in recipients.per_segment.items())
    notes = []
    if composer.identity.placeholder:
        notes.append(
            "MAILER_FROM is not set: the messages use the placeholder sender "
            f"{esc(composer.identity.from_header)}."
        )
    for problem in recipients.skipped:
        notes.append(f"Skipped: {esc(problem.describe())}")
    for problem in recipients.warnings:
        notes.append(f"Warning: {esc(problem.describe())}")
    with result.page.open("w", encoding="utf-8") as page:
        page.write(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Preview of {esc(bulletin.id)}</title><style>{_PAGE_STYLE}</style></head><body>"
            f"<h1>Preview: {esc(bulletin.title.get('en'))}</h1>"
            f'<p class="meta">Issue {esc(bulletin.id)} · {result.messages} messages · '
            f"{len(result.variants)} variants · per segment: {segments} · "
            f"suppressed: {recipients.suppressed} · mbox: {esc(result.mbox.name)}</p>"
        )
        for note in notes:
            page.write(f'<p class="note">{note}</p>')
        for summary in result.variants.values():
            index = summary.index
            variant = composer.variant(summary.key)
            values = variant.personal_values(summary.sample, composer.identity, bulletin.id)
            body = _viewable(variant, variant.personal_html(values))
            text = variant.personal_text(values)
            language = summary.key.language
            titles = [i.text(language).title for i in bulletin.items_for(summary.key.segments)]
            page.write(
                f'<section id="variant-{index}"><h2>Variant {index + 1}: '
                f"{esc(summary.key.label())} — {summary.count} recipient(s)</h2>"
                f'<p class="meta">Subject: {esc(variant.subject)}<br>'
                f"Preheader: {esc(bulletin.preheader.get(summary.key.language))}<br>"
                f"Items: {esc(' · '.join(titles))}<br>"
                f"Shown as received by {esc(summary.sample.email)}</p>"
                # Sandboxed: no script in a bulletin runs in the page (same origin only
                # so the page's reviewers and tests can look inside).
                '<div class="panes"><div class="pane">'
                '<iframe sandbox="allow-same-origin allow-popups" '
                f'title="HTML of variant {index + 1}" '
                f'srcdoc="{esc(body, quote=True)}"></iframe></div>'
                f'<div class="pane"><pre>{esc(text)}</pre></div></div></section>'
            )
        page.write(
            '<h2 id="recipients">Recipients</h2><div class="scroll"><table class="list">'
            "<tr><th>Email</th><th>Name</th><th>Organization</th><th>Segments</th>"
            "<th>Language</th><th>Variant</th></tr>\n"
        )
        for row in rows:
            page.write(row)
        page.write("</table></div></body></html>\n")
