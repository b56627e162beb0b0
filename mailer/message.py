"""Encoded messages, built once per variant and personalized by cheap substitution.

Building a fresh ``EmailMessage`` and serializing it costs ~3 ms a recipient;
quoted-printable encoding a 30 KB HTML body alone costs ~0.2 ms. So each variant
is encoded once into a :class:`MessageTemplate`: a list of already-encoded byte
pieces with *holes* between them. Personalizing fills each hole with a value
encoded on its own (a name, an address, a URL: a few dozen bytes).

This is safe because every piece of a quoted-printable body ends on a line
boundary: a piece that stops mid-line ends with a soft line break (``=`` CRLF),
which decoders remove. So a value can be encoded independently of its
neighbours, no line exceeds 76 characters, and the decoded body is exactly the
text the template rendered with the value in place. The test suite proves it by
comparing with messages built the slow way with the standard library.

Header values are checked for CR and LF here, whatever the loaders did: the
CPython on our machines (CVE-2024-6923) lets a newline inside an encoded word
survive, which would let a crafted name add a ``Bcc:`` header.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr
from functools import cached_property

from mailer.errors import ContentError

CRLF = b"\r\n"
LF = b"\n"
SOFT_BREAK = b"=\n"

# A hole in a rendered body. Letters and digits only, so it survives premailer
# (which URL-encodes ``{{ }}`` in href, peterbe/premailer #72), HTML escaping and
# quoted-printable encoding unchanged.
_HOLE = "MAILERSLOT{}Z"
HOLE_PATTERN = re.compile(r"MAILERSLOT(\d+)Z")
# Content may not contain the markers' stem at all (any case): it would be
# taken for a personal value, or break the check that every marker survived.
RESERVED_TEXT = re.compile(r"MAILERSLOT\w*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WORD_BYTES = 39  # 39 UTF-8 bytes: a 64-character word, so "Reply-To: " + word fits 78


def hole(index: int) -> str:
    """The marker a template renders where value ``index`` goes."""
    return _HOLE.format(index)


def safe_header_value(value: str, field: str) -> str:
    """Refuse CR, LF and other control characters in anything bound for a header."""
    if _CONTROL.search(value):
        raise ContentError(
            f"a line break or control character would reach the {field} header; refused.",
            field=field,
        )
    return value


def qp(text: str) -> bytes:
    """Quoted-printable UTF-8 with LF line ends; a line never starts with ``From ``.

    (``From `` at a line start is rewritten ``=46rom ``: the same decoded text, and an
    mbox file then holds the message byte for byte.)
    """
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    if encoded.startswith(b"From "):
        encoded = b"=46" + encoded[1:]
    if b"\nFrom " in encoded:
        encoded = encoded.replace(b"\nFrom ", b"\n=46rom ")
    return encoded


def qp_piece(text: str) -> bytes:
    """Quoted-printable for a piece of a body, ending on a line boundary."""
    encoded = qp(text)
    if encoded and not encoded.endswith(LF):
        encoded += SOFT_BREAK
    return encoded


def encoded_words(text: str) -> str:
    """RFC 2047 base64 words for non-ASCII text, folded (LF + space) between words.

    Written here rather than with ``email.header.Header``, which costs ~180 µs a
    name; words never split a character.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append("".join(chunk))
    return "\n ".join(
        f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words
    )


def encode_address(name: str, address: str) -> str:
    """``Name <address>`` for From, To, Reply-To or List-Id, ready to follow ``Field: ``.

    ASCII names are quoted as needed; others become RFC 2047 encoded words.
    """
    safe_header_value(name, "address")
    safe_header_value(address, "address")
    if name.isascii():
        return formataddr((name, address))
    return f"{encoded_words(name)} <{address}>"


def header_line(name: str, value: str, *, encoded: bool = False) -> bytes:
    """One header line (LF-terminated), RFC 2047-encoded and folded when it needs to be.

    ``encoded`` values (addresses from :func:`encode_address`) are written as they are.
    """
    safe_header_value(value.replace("\n ", " ") if encoded else value, name)
    if encoded or (value.isascii() and len(name) + len(value) + 2 <= 78):
        return f"{name}: {value}\n".encode("ascii")
    folded = Header(value, "utf-8", header_name=name).encode(linesep="\n", maxlinelen=78)
    return f"{name}: {folded}\n".encode("ascii")


# How a value is encoded for the hole it fills (LF line ends, like the pieces).
Encoder = Callable[[str], bytes]


def raw_header(value: str) -> bytes:
    """A header value already encoded by :func:`encode_address` or the like."""
    return value.encode("ascii")


def html_text(value: str) -> str:
    """Escape a value for HTML text or a double-quoted attribute."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def qp_html(value: str) -> bytes:
    """A value for an HTML body: escaped, then quoted-printable."""
    return qp_piece(html_text(value))


# Encoders whose output starts and ends on a line boundary (quoted-printable
# body values); what follows them starts a line.
LINE_ENCODERS: frozenset[Encoder] = frozenset({qp_piece, qp_html})


_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")


def relaxed_lines(data: bytes) -> bytes:
    """DKIM relaxed body canonicalization (RFC 6376 3.4.4) of whole CRLF lines: runs of
    white space become one space and none is left at a line end."""
    if b"\t" in data or b"  " in data or b" \r\n" in data:
        data = _TRAILING_WSP.sub(b"\r\n", _WSP_RUN.sub(b" ", data))
    return data


def _stuff(data: bytes, at_line_start: bool) -> bytes:
    """SMTP dot-stuffing (RFC 5321 4.5.2): a line starting with "." gets another."""
    if at_line_start and data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


@dataclass(frozen=True)
class MessageTemplate:
    """A variant's encoded message: ``pieces`` interleaved with ``holes``.

    ``holes[i]`` is ``(value name, encoder)`` and goes between ``pieces[i]`` and
    ``pieces[i + 1]``. The pieces are kept in three forms, made once per variant,
    so that no sink converts a whole message: LF line ends (mbox files), CRLF (the
    message itself), and *wire* (CRLF, dot-stuffed, ended by ``.`` CRLF: the bytes
    that follow an SMTP DATA command).
    """

    pieces: tuple[bytes, ...]
    holes: tuple[tuple[str, Encoder], ...]
    pieces_crlf: tuple[bytes, ...] = ()
    pieces_wire: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        crlf = tuple(p.replace(LF, CRLF) for p in self.pieces)
        # A piece starts a line when it opens the message or follows a body value
        # (body values always end on a line boundary); header values end mid-line.
        starts = [True] + [encoder in LINE_ENCODERS for _, encoder in self.holes]
        wire = [_stuff(p, start) for p, start in zip(crlf, starts, strict=True)]
        wire[-1] += b".\r\n"
        object.__setattr__(self, "pieces_crlf", crlf)
        object.__setattr__(self, "pieces_wire", tuple(wire))

    @cached_property
    def pieces_canonical(self) -> tuple[bytes, ...]:
        """The body part of each piece in DKIM relaxed form (header parts left out).

        Body pieces and body values are whole lines, so canonicalizing each on its
        own equals canonicalizing the whole body: a signature then costs one hash
        over bytes already prepared, not a pass of regular expressions per message.
        """
        out = []
        in_body = False
        for piece in self.pieces_crlf:
            if not in_body and b"\r\n\r\n" in piece:
                in_body = True
                out.append(relaxed_lines(piece.partition(b"\r\n\r\n")[2]))
            else:
                out.append(relaxed_lines(piece) if in_body else b"")
        return tuple(out)

    def fill(self, values: Mapping[str, str], form: str = "crlf") -> bytes:
        """The message for one recipient, in ``form``: ``lf``, ``crlf``, ``wire``, or
        ``canonical`` (only the body, in DKIM relaxed form, for the body hash)."""
        if form == "canonical":
            return self._canonical_body(values)
        pieces = {"crlf": self.pieces_crlf, "lf": self.pieces, "wire": self.pieces_wire}[form]
        encoded: dict[tuple[str, Encoder], bytes] = {}
        out = [pieces[0]]
        for hole_key, piece in zip(self.holes, pieces[1:], strict=True):
            chunk = encoded.get(hole_key)
            if chunk is None:
                name, encoder = hole_key
                chunk = encoder(values[name])
                if form != "lf":
                    chunk = chunk.replace(LF, CRLF)
                if form == "wire" and encoder in LINE_ENCODERS:
                    chunk = _stuff(chunk, True)
                encoded[hole_key] = chunk
            out.append(chunk)
            out.append(piece)
        return b"".join(out)

    def _canonical_body(self, values: Mapping[str, str]) -> bytes:
        pieces = self.pieces_canonical
        out = [pieces[0]]
        for (name, encoder), piece in zip(self.holes, pieces[1:], strict=True):
            if encoder in LINE_ENCODERS:  # body values; header values are not in the body
                out.append(relaxed_lines(encoder(values[name]).replace(LF, CRLF)))
            out.append(piece)
        body = b"".join(out).rstrip(b"\r\n")
        return body + CRLF if body else b""


class TemplateBuilder:
    """Accumulates literal bytes (LF line ends) and holes into a :class:`MessageTemplate`."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = [b""]
        self._holes: list[tuple[str, Encoder]] = []

    def literal(self, data: bytes) -> None:
        self._pieces[-1] += data

    def hole(self, name: str, encoder: Encoder) -> None:
        self._holes.append((name, encoder))
        self._pieces.append(b"")

    def body(self, rendered: str, names: Mapping[int, str], encoder: Encoder) -> None:
        """Add a rendered body whose markers become holes; literal text is QP-encoded."""
        position = 0
        for match in HOLE_PATTERN.finditer(rendered):
            self.literal(qp_piece(rendered[position : match.start()]))
            self.hole(names[int(match.group(1))], encoder)
            position = match.end()
        self.literal(qp_piece(rendered[position:]))

    def build(self) -> MessageTemplate:
        return MessageTemplate(tuple(self._pieces), tuple(self._holes))
