"""Compose: a bulletin and its recipients become a lazy stream of ready-to-send messages.

A *variant* is (the reader's segments, which decide the items; the reader's
language). Each distinct variant is rendered through the Jinja2 templates and
CSS-inlined by premailer exactly once, then encoded once into a
:class:`~mailer.message.MessageTemplate`. Per recipient only the personal values
(greeting, name, address, unsubscribe target) are encoded and slotted in, so the
cost per message is a few microseconds and memory does not grow with the list.

Personal values reach the templates as markers (``recipient.name`` renders as
``MAILERSLOT3Z``), so a template uses them like any field but cannot branch on
them: Python decides who gets what, templates decide how it looks.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from babel.support import NullTranslations
from markdown_it import MarkdownIt
from markupsafe import Markup
from premailer import Premailer

from mailer import language as lang
from mailer import layout, templating
from mailer.bulletin import Bulletin, Item, image_file_name
from mailer.errors import ConfigError, ContentError
from mailer.message import (
    HOLE_PATTERN,
    LF,
    MessageTemplate,
    TemplateBuilder,
    encode_address,
    header_line,
    hole,
    html_text,
    qp_html,
    qp_piece,
    raw_header,
    safe_header_value,
)
from mailer.plaintext import markdown_to_text, wrap
from mailer.recipients import Recipient
from mailer.settings import PLACEHOLDER_FROM, Settings
from mailer.signing import PendingSignature, Signer
from mailer.unsubscribe import TEST_TAG, make_token
from mailer.verp import id_key, message_id, verp_address

_markdown = MarkdownIt("commonmark", {"html": False})


@dataclass(frozen=True)
class VariantKey:
    """Which items a reader gets (their segments) and in which language."""

    segments: tuple[str, ...]
    language: str

    def label(self) -> str:
        return f"{' + '.join(self.segments)} · {self.language}"


@dataclass(frozen=True)
class Identity:
    """Who the bulletin is from and where its links point, from the settings."""

    from_header: str
    domain: str
    reply_to: str | None
    list_id: str
    unsubscribe_mailto: str | None
    unsubscribe_url: str | None
    archive_url: str | None
    envelope_from: str = ""
    unsubscribe_secret: bytes = field(default=b"", repr=False)
    bounce_address: str | None = None
    id_key: bytes | None = field(default=None, repr=False)  # keys VERP tags and Message-IDs
    signer: Signer | None = field(default=None, repr=False)
    placeholder: bool = False
    notes: tuple[str, ...] = ()
    # The Babel locale of each language's dates (MAILER_LOCALES; see language.py).
    locales: Mapping[str, str] = field(default_factory=lambda: dict(lang.DEFAULT_LOCALES))
    # The list's stable name (MAILER_LIST_NAME): List-Id's display name and the footer's.
    list_name: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, *, dry_run: bool) -> Identity:
        """Real sends need From and an unsubscribe target; a dry run invents placeholders."""
        sender = settings.from_
        placeholder = False
        if sender is None:
            if not dry_run:
                raise ConfigError("a real send needs a sender address.", field="MAILER_FROM")
            sender, placeholder = PLACEHOLDER_FROM, True
        name, address = parseaddr(sender)
        domain = address.rpartition("@")[2].lower()
        mailto, url = settings.unsubscribe_mailto, settings.unsubscribe_url
        if mailto is None and url is None:
            if not dry_run:
                raise ConfigError(
                    "a real send needs an unsubscribe target (an address or an https URL).",
                    field="MAILER_UNSUBSCRIBE_MAILTO",
                )
            mailto = f"unsubscribe@{domain}"
        notes = []
        secret = settings.unsubscribe_secret
        if url is not None and secret is None:
            if not dry_run:
                raise ConfigError(
                    "MAILER_UNSUBSCRIBE_URL needs a key to sign its per-reader tokens.",
                    field="MAILER_UNSUBSCRIBE_SECRET",
                )
            notes.append("MAILER_UNSUBSCRIBE_SECRET is not set: preview tokens use a dummy key.")
        if not dry_run:
            settings.check_sign_in()
        key = id_key(settings)
        if settings.bounce_address and key is None and not dry_run:
            raise ConfigError(
                "MAILER_BOUNCE_ADDRESS needs a key for its per-reader addresses, so that "
                "nobody can forge a bounce (any long random text).",
                field="MAILER_BOUNCE_SECRET",
            )
        return cls(
            from_header=encode_address(name, address),
            domain=domain,
            reply_to=settings.reply_to,
            list_id=settings.list_id or f"bulletin.{domain}",
            unsubscribe_mailto=mailto,
            unsubscribe_url=url,
            archive_url=settings.archive_url,
            envelope_from=address,
            unsubscribe_secret=(
                secret.get_secret_value().encode() if secret else b"preview-only-not-a-secret"
            ),
            bounce_address=settings.bounce_address,
            locales=settings.locale_map,
            list_name=(settings.list_name or "").strip() or name.strip() or domain,
            id_key=key,
            signer=Signer.from_settings(settings),
            placeholder=placeholder,
            notes=tuple(notes),
        )

    def envelope_for(self, issue: str, address: str) -> str:
        """MAIL FROM for one message: a VERP address when bounces are collected."""
        if self.bounce_address and self.id_key is not None:
            return verp_address(self.bounce_address, self.id_key, issue, address)
        return self.envelope_from


class OutgoingMessage:
    """One recipient's message. The bytes are made when a sink asks for them, in the
    line ends that sink wants, so the stream itself carries almost nothing."""

    __slots__ = (
        "_signer",
        "_template",
        "_values",
        "envelope_from",
        "message_id",
        "recipient",
        "to",
        "variant",
    )

    def __init__(
        self,
        recipient: Recipient,
        variant: VariantKey,
        template: MessageTemplate,
        values: dict[str, str],
        *,
        envelope_from: str,
        to: str | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.recipient = recipient
        self.to = to or recipient.email  # the envelope recipient (RCPT TO)
        self.envelope_from = envelope_from  # MAIL FROM (VERP when bounces are collected)
        self.variant = variant
        self.message_id = values["message_id"]
        self._template = template
        self._values = values
        self._signer = signer

    def _signature(self, message: bytes) -> bytes:
        assert self._signer is not None
        return self._signer.header(message, self._template.fill(self._values, "canonical"))

    @property
    def data(self) -> bytes:
        """The message with CRLF line ends (DKIM-signed when configured)."""
        body = self._template.fill(self._values)
        return self._signature(body) + body if self._signer else body

    def mbox_data(self) -> bytes:
        """The same message with LF line ends, as an mbox file stores it."""
        if self._signer is not None:
            return self.data.replace(b"\r\n", b"\n")
        return self._template.fill(self._values, "lf")

    def wire(self, signature: bytes | None = None) -> bytes:
        """The bytes that follow SMTP DATA: CRLF, dot-stuffed, ended by ``.`` CRLF.

        ``signature`` is the DKIM-Signature header when the caller made it (see
        :meth:`pending_signature`); otherwise it is made here when configured.
        """
        wire = self._template.fill(self._values, "wire")
        if signature is None and self._signer is not None:
            signature = self._signature(self._template.fill(self._values))
        return signature + wire if signature else wire

    def pending_signature(self) -> tuple[PendingSignature, Signer] | None:
        """The DKIM work but the RSA operation, for a sender that signs in a thread."""
        if self._signer is None:
            return None
        canonical = self._template.fill(self._values, "canonical")
        return self._signer.prepare(self._template.fill(self._values), canonical), self._signer


@dataclass(frozen=True)
class Image:
    """An image of the bulletin: referenced under the archive, or embedded (cid:)."""

    path: Path
    content_id: str
    mime_type: str


class _PersonalFields:
    """What templates see as ``recipient``: each field renders as a hole marker."""

    def __init__(self, names: list[str]) -> None:
        self._names = names

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._names:
            self._names.append(name)
        return hole(self._names.index(name))


@dataclass
class Variant:
    """A rendered variant: its HTML and text with holes, and its encoded template."""

    key: VariantKey
    subject: str
    html: str
    text: str
    hole_names: dict[int, str]
    images: tuple[Image, ...]
    template: MessageTemplate
    catalog: NullTranslations = field(repr=False)

    def personal_values(
        self, recipient: Recipient, identity: Identity, issue: str, *, test: bool = False
    ) -> dict[str, str]:
        """The values for this recipient's holes, in their language (``test``: the inert
        unsubscribe targets of a test copy)."""
        link = unsubscribe_link(identity, recipient, issue, test=test)
        mailto = unsubscribe_mailto(identity, recipient, issue, test=test)
        values = {
            "email": recipient.email,
            "name": recipient.name,
            "organization": recipient.organization,
            "country": recipient.country,
            "greeting": lang.greeting(recipient.name, self.catalog),
            "unsubscribe_url": link,
            "message_id": message_id(identity.id_key, issue, recipient.email, identity.domain),
            "to": encode_address(recipient.name, recipient.email),
            "list_unsubscribe": list_unsubscribe(
                mailto, identity.unsubscribe_url and link, personal=identity.id_key is not None
            ),
        }
        for name in self.hole_names.values():
            if name not in values:
                values[name] = recipient.fields.get(name.removeprefix("field_"), "")
        return values

    def personal_html(self, values: dict[str, str]) -> str:
        """The HTML with this recipient's values in place (for previews and tests)."""
        return HOLE_PATTERN.sub(
            lambda m: html_text(values[self.hole_names[int(m.group(1))]]), self.html
        )

    def personal_text(self, values: dict[str, str]) -> str:
        """The plain text with this recipient's values in place."""
        return HOLE_PATTERN.sub(lambda m: values[self.hole_names[int(m.group(1))]], self.text)


def unsubscribe_link(
    identity: Identity, recipient: Recipient, issue: str, *, test: bool = False
) -> str:
    """The footer's unsubscribe target: the https page with this reader's opaque token
    (RFC 8058 one-click), else a mailto. A test copy's token unsubscribes nobody."""
    if identity.unsubscribe_url:
        joiner = "&" if "?" in identity.unsubscribe_url else "?"
        token = make_token(identity.unsubscribe_secret, recipient.email, issue, test=test)
        # The language travels with the link: the endpoint's pages need no list.
        return f"{identity.unsubscribe_url}{joiner}token={token}&lang={recipient.language}"
    mailto = unsubscribe_mailto(identity, recipient, issue, test=test)
    return f"mailto:{mailto}?subject=unsubscribe"


def unsubscribe_mailto(
    identity: Identity, recipient: Recipient, issue: str, *, test: bool = False
) -> str | None:
    """The reader's own unsubscribe address, ``unsubscribe+<issue>.<tag>@domain``.

    Mail clients drop or blank a mailto's subject, so the proof of who asks goes
    in the address: the keyed tag of the VERP scheme, resolved through the
    ledger (``unsubscribe.py``). A test copy's tag is ``test``, which the mailed
    path ignores. Without a key, the bare address.
    """
    base = identity.unsubscribe_mailto
    if base is None or identity.id_key is None:
        return base
    if test:
        local, _, domain = base.rpartition("@")
        return f"{local}+{issue}.{TEST_TAG}@{domain}"
    return verp_address(base, identity.id_key, issue, recipient.email)


def list_unsubscribe(mailto: str | None, link: str | None, *, personal: bool = False) -> str:
    """RFC 2369 List-Unsubscribe value: the reader's mailto and/or https targets, folded."""
    targets = []
    if mailto and personal:
        targets.append(f"<mailto:{mailto}>")  # the address itself says who asks
    elif mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    if link:
        targets.append(f"<{link}>")
    return ",\n ".join(safe_header_value(t, "List-Unsubscribe") for t in targets)


def _environment(templates: Path | None) -> jinja2.Environment:
    return templating.environment(
        templates,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class Composer:
    """Renders variants on first use and turns recipients into messages."""

    def __init__(
        self,
        bulletin: Bulletin,
        identity: Identity,
        *,
        templates: Path | None = None,
        now: datetime | None = None,
        subject_prefix: str = "",
        test: bool = False,
    ) -> None:
        self.bulletin = bulletin
        self.test = test  # test copies (--test-to): say so, and unsubscribe nobody
        self.identity = identity
        self.templates = templates  # None: the bundled set (and ./templates when present)
        self.env = _environment(templates)
        self.date = format_datetime(now or datetime.now(UTC))
        self.subject_prefix = subject_prefix
        self.variants: dict[VariantKey, Variant] = {}
        self.images = self._images()
        # A public: false issue links nothing on the archive (publish writes nothing of it).
        self.archive = identity.archive_url.rstrip("/") if identity.archive_url else None
        if not bulletin.public:
            self.archive = None
        public = bulletin.public_items()
        self._public = {id(item) for item in public}
        self._public_images = {item.image for item in public if item.image is not None}

    def _images(self) -> dict[Path, Image]:
        images = {}
        for index, item in enumerate(self.bulletin.items, start=1):
            if item.image is not None and item.image not in images:
                mime = item.image_type or "application/octet-stream"  # checked at load time
                cid = f"image{index}.{self.bulletin.id}@{self.identity.domain}"
                images[item.image] = Image(item.image, cid, mime)
        return images

    def _hosted(self, image: Image) -> bool:
        """Whether the web archive hosts ``image``: only images of public items are published."""
        return bool(self.archive) and image.path in self._public_images

    def image_src(self, image: Image) -> str:
        """Absolute URL under the archive when it hosts the image; else the embedded part."""
        if self.archive and self._hosted(image):
            return layout.url(
                self.archive, layout.image(self.bulletin.id, image_file_name(image.path))
            )
        return f"cid:{image.content_id}"

    def variant(self, key: VariantKey) -> Variant:
        """The variant for ``key``, rendered and encoded the first time it is asked for."""
        found = self.variants.get(key)
        if found is None:
            found = self.variants[key] = self._render(key)
        return found

    def compose(self, recipient: Recipient, *, deliver_to: str | None = None) -> OutgoingMessage:
        """One recipient's message: their variant's template with their values.

        ``deliver_to`` sends it, as ``recipient`` would see it, to another address
        instead (``--test-to``), with a Message-ID of its own.
        """
        key = VariantKey(recipient.segments, recipient.language)
        variant = self.variant(key)
        values = variant.personal_values(recipient, self.identity, self.bulletin.id, test=self.test)
        if deliver_to is not None:
            values["to"] = encode_address("", deliver_to)
            values["message_id"] = message_id(
                self.identity.id_key,
                f"{self.bulletin.id}.test",
                f"{deliver_to}\0{recipient.email}",
                self.identity.domain,
            )
        return OutgoingMessage(
            recipient,
            key,
            variant.template,
            values,
            envelope_from=self.identity.envelope_for(
                self.bulletin.id, deliver_to or recipient.email
            ),
            to=deliver_to,
            signer=self.identity.signer,
        )

    def stream(self, recipients: Iterable[Recipient]) -> Iterator[OutgoingMessage]:
        """Messages produced one at a time: nothing is held for the whole list."""
        for recipient in recipients:
            yield self.compose(recipient)

    # -- rendering -------------------------------------------------------------

    def _item_view(self, item: Item, language: str) -> dict[str, Any]:
        text = item.text(language)
        image = self.images.get(item.image) if item.image else None
        return {
            "title": text.title,
            "html": Markup(_markdown.render(text.body)),
            "text": markdown_to_text(text.body),
            "when": lang.date_span(item.starts, item.ends, self.identity.locales[language])
            if item.starts
            else None,
            "location": text.location,
            "deadline": lang.full_date(item.deadline, self.identity.locales[language])
            if item.deadline
            else None,
            "link": text.link,
            "image": self.image_src(image) if image else None,
            "alt": text.alt,
            "language": language if item.texts.get(language) else "en",
            "calendar": self._calendar_url(item, language),
        }

    def _calendar_url(self, item: Item, language: str) -> str | None:
        """The item's calendar file on the web archive: linked, never attached, and
        only where ``mailer publish`` writes one (a public item with dates)."""
        if not self.archive or item.starts is None or id(item) not in self._public:
            return None
        return layout.url(self.archive, layout.calendar(self.bulletin.id, item.slug, language))

    def _render(self, key: VariantKey) -> Variant:
        language = key.language
        catalog = templating.translations(self.templates, language)
        templating.use_language(self.env, catalog, language)
        items = self.bulletin.items_for(key.segments)
        names: list[str] = []
        context = {
            "lang": language,
            "bulletin": {
                "id": self.bulletin.id,
                "title": self.bulletin.title.get(language),
                "preheader": self.bulletin.preheader.get(language),
                "date": lang.long_date(self.bulletin.date, self.identity.locales[language]),
            },
            "items": [self._item_view(item, language) for item in items],
            "segments": [lang.segment_label(s, catalog) for s in key.segments],
            "list_name": self.identity.list_name,
            # "View in your browser": the issue's page in the reader's language
            # (README, "Web archive": <archive>/<id>/<lang>.html).
            "archive_url": (
                layout.url(self.archive, layout.issue_page(self.bulletin.id, language))
                if self.archive
                else None
            ),
            "recipient": _PersonalFields(names),
            "test": self.test,
        }
        try:
            html_source = self.env.get_template("bulletin.html.j2").render(context)
            text_source = self.env.get_template("bulletin.txt.j2").render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise ContentError(
                f"template error: {exc.message}.", file=exc.filename, line=exc.lineno
            ) from None
        except jinja2.TemplateError as exc:
            raise ContentError(
                f"template error: {exc}.", file=self.templates or templating.BUNDLED
            ) from None
        html = _inline_css(html_source)
        text = wrap(text_source.replace("\r\n", "\n"))
        hole_names = dict(enumerate(names))
        subject = self.subject_prefix + self.bulletin.subject.get(language)
        used = [self.images[i.image] for i in items if i.image is not None]
        embedded = tuple(dict.fromkeys(i for i in used if not self._hosted(i)))
        template = self._encode(key, subject, html, text, hole_names, embedded)
        return Variant(key, subject, html, text, hole_names, embedded, template, catalog)

    def _encode(
        self,
        key: VariantKey,
        subject: str,
        html: str,
        text: str,
        hole_names: dict[int, str],
        images: tuple[Image, ...],
    ) -> MessageTemplate:
        """The variant's whole message, headers included, as pieces and holes."""
        ident = self.identity
        tag = hashlib.sha256(f"{self.bulletin.id}{subject}{html}{text}".encode()).hexdigest()[:20]
        outer, inner = f"=_alt_{tag}", f"=_rel_{tag}"
        out = TemplateBuilder()
        out.literal(header_line("From", ident.from_header, encoded=True))
        out.literal(b"To: ")
        out.hole("to", raw_header)
        out.literal(LF + header_line("Subject", subject) + header_line("Date", self.date))
        out.literal(b"Message-ID: ")
        out.hole("message_id", raw_header)
        out.literal(LF)
        if ident.reply_to:
            out.literal(
                header_line("Reply-To", encode_address(*parseaddr(ident.reply_to)), encoded=True)
            )
        # A stable display name: mail filters and list headers key on it (an issue's
        # title, with its month, made each issue look like a new list).
        list_id = encode_address(ident.list_name, ident.list_id)
        out.literal(header_line("List-Id", list_id, encoded=True))
        out.literal(b"List-Unsubscribe: ")
        out.hole("list_unsubscribe", raw_header)
        out.literal(LF)
        if ident.unsubscribe_url:
            out.literal(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n")
        if self.archive:  # RFC 2369 and RFC 5064: the list's archive, this issue in it
            archive = self.archive
            index = layout.url(archive, layout.index(key.language))
            out.literal(header_line("List-Archive", f"<{index}>"))
            page = layout.url(archive, layout.issue_page(self.bulletin.id, key.language))
            out.literal(header_line("Archived-At", f"<{page}>"))
        # Gmail's feedback loop reports complaints per campaign:segment:type:sender.
        segments = "+".join(key.segments)
        feedback = f"{self.bulletin.id}:{segments}:bulletin:{ident.list_id}"
        out.literal(header_line("Feedback-ID", feedback))
        out.literal(b"MIME-Version: 1.0\n")
        out.literal(f'Content-Type: multipart/alternative; boundary="{outer}"\n\n'.encode())
        out.literal(f"--{outer}\n".encode() + _part_headers("text/plain"))
        out.body(text, hole_names, qp_piece)
        out.literal(f"\n--{outer}\n".encode())
        if images:
            out.literal(
                f'Content-Type: multipart/related; type="text/html";\n boundary="{inner}"\n\n'
                f"--{inner}\n".encode()
            )
        out.literal(_part_headers("text/html"))
        out.body(html, hole_names, qp_html)
        for image in images:
            out.literal(f"\n--{inner}\n".encode() + _image_part(image))
        if images:
            out.literal(f"\n--{inner}--\n".encode())
        out.literal(f"\n--{outer}--\n".encode())
        return out.build()


def _part_headers(mime_type: str) -> bytes:
    return (
        f'Content-Type: {mime_type}; charset="utf-8"\n'
        "Content-Transfer-Encoding: quoted-printable\n\n"
    ).encode()


def _image_part(image: Image) -> bytes:
    data = base64.encodebytes(image.path.read_bytes())
    name = image.path.name.replace('"', "")
    # RFC 2231 for a name that is not ASCII (a header holds ASCII only).
    filename = f'filename="{name}"' if name.isascii() else f"filename*=utf-8''{quote(name)}"
    return (
        f"Content-Type: {image.mime_type}\n"
        "Content-Transfer-Encoding: base64\n"
        f"Content-ID: <{image.content_id}>\n"
        f"Content-Disposition: inline; {filename}\n\n"
    ).encode() + data.rstrip(LF)


def _inline_css(html: str) -> str:
    """Inline the CSS once per variant; prove the hole markers came through intact."""
    before = len(HOLE_PATTERN.findall(html))
    inlined = Premailer(
        html,
        keep_style_tags=False,
        strip_important=False,
        remove_classes=False,
        disable_validation=True,
        cssutils_logging_level="CRITICAL",
        allow_network=False,
        # Keep the template's own attributes: premailer would turn the image's pixel
        # width (Outlook for Windows needs one) into width="100%" and add
        # height="auto" and bgcolor on links, which HTML does not allow.
        disable_basic_attributes=["width", "height", "bgcolor"],
    ).transform()
    after = len(HOLE_PATTERN.findall(inlined))
    if before != after:
        raise ContentError(
            f"inlining the CSS changed the personal fields ({before} before, {after} after)."
        )
    return str(inlined)
