"""Plain text for the text/plain alternative: Markdown without its marks, wrapped at 78.

Readers of the plain part (screen readers, text-only clients, spam filters) must
get the whole message: links are written out as ``text <url>``, no Markdown or
HTML syntax remains, and every line fits in 78 columns unless it is a single URL
or word too long to break, which then stands alone on its line.
"""

from __future__ import annotations

import textwrap
from typing import Any

from markdown_it import MarkdownIt

WIDTH = 78

_markdown = MarkdownIt("commonmark", {"html": False})


def _inline(children: list[Any]) -> str:
    """The text of an inline run, links written out after their text."""
    out: list[str] = []
    link_stack: list[tuple[str, int]] = []
    for token in children:
        kind = token.type
        if kind in ("text", "code_inline"):
            out.append(token.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "link_open":
            link_stack.append((str(token.attrGet("href") or ""), len(out)))
        elif kind == "link_close" and link_stack:
            href, start = link_stack.pop()
            label = "".join(out[start:]).strip()
            bare = href.removeprefix("mailto:")
            if label not in (href, bare):
                out.append(f" <{bare}>")
            else:
                out[start:] = [bare]
        elif kind == "image":
            out.append(token.content or "")
    return "".join(out)


def markdown_to_text(source: str) -> str:
    """Markdown as readable plain text, one logical line per paragraph (not yet wrapped)."""
    lines: list[str] = []
    prefixes: list[str] = []
    counters: list[int | None] = []
    pending_bullet: str | None = None
    for token in _markdown.parse(source):
        kind = token.type
        if kind == "bullet_list_open":
            counters.append(None)
        elif kind == "ordered_list_open":
            counters.append(int(token.attrGet("start") or 1))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            counters.pop()
            lines.append("")
        elif kind == "list_item_open":
            number = counters[-1] if counters else None
            pending_bullet = "- " if number is None else f"{number}. "
            if number is not None:
                counters[-1] = number + 1
        elif kind == "blockquote_open":
            prefixes.append("    ")
        elif kind == "blockquote_close":
            prefixes.pop()
        elif kind in ("inline", "code_block", "fence"):
            text = _inline(token.children or []) if kind == "inline" else token.content.rstrip()
            indent = "".join(prefixes)
            for part in text.split("\n"):
                if pending_bullet:
                    lines.append(f"{indent}{pending_bullet}{part}")
                    pending_bullet = None
                else:
                    lines.append(f"{indent}{part}")
            if kind != "inline":
                lines.append("")
        elif kind in ("paragraph_close", "heading_close") and not token.hidden:
            lines.append("")
        elif kind == "hr":
            lines.extend(["-" * 20, ""])
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n")


def wrap(text: str, width: int = WIDTH) -> str:
    """Wrap every line longer than ``width``, keeping its indent and list marker."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line.rstrip())
            continue
        stripped = line.lstrip(" ")
        indent = line[: len(line) - len(stripped)]
        marker = ""
        for candidate in ("- ", "* "):
            if stripped.startswith(candidate):
                marker = candidate
        head, _, _ = stripped.partition(" ")
        if not marker and head.endswith(".") and head[:-1].isdigit():
            marker = head + " "
        out.append(
            textwrap.fill(
                stripped,
                width=width,
                initial_indent=indent,
                subsequent_indent=indent + " " * len(marker),
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)
