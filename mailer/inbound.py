"""What came back: the one reader of inbound mail, for ``mailer bounces`` and ``mailer sync``.

Every message, from the mailbox or a file, is parsed from its bytes (never
``as_string()``, which cannot re-encode ``iso-2022-jp`` and other charsets) and
classed once, by these rules in order:

1. A ``message/delivery-status`` or ``message/global-delivery-status`` part
   (RFC 3464, RFC 6533), whatever the outer type, or an ``X-Failed-Recipients``
   header: a **delivery report**. A ``message/feedback-report`` part (RFC 5965):
   a **complaint**. A read receipt (``report-type=disposition-notification``,
   RFC 8098): **automatic**. The machine-readable part decides, whatever
   ``Auto-Submitted`` or the subject says (Exim, Google Groups and 1&1 mark
   their bounces ``Auto-Submitted: auto-replied``, as RFC 3834 allows).
2. Mail to the unsubscribe address (its subaddresses included): an
   **unsubscribe request** (``unsubscribe.py`` decides whether it is trusted).
   Reports go to our envelope sender, never there, so this comes before the
   rules below (Apple Mail marks its own unsubscribe mail ``auto-replied``).
3. A message from ``MAILER-DAEMON`` or ``postmaster`` (by address or name), or
   one in which flufl.bounce's detectors find failed recipients (attached
   ``message/rfc822`` parts aside): a **delivery report**.
4. ``Auto-Submitted`` other than ``no``, ``X-Autoreply``, ``X-Autorespond``,
   ``Precedence: auto_reply/bulk/junk``, or an automatic-reply subject in
   one of the languages below: an **automatic reply**, which changes nothing,
   even at the VERP address. Only then does a bounce's subject
   (``Undeliverable: …``) make a **delivery report**.
5. Anything else is a **person's reply**: left for staff, changes nothing.

A message whose structure cannot be parsed at all is **unreadable** (reported,
never a reason to stop). Text in an unknown charset is read as Latin-1: the
machine-readable parts are ASCII, so nothing a decision needs is lost.
"""

from __future__ import annotations

import copy
import logging
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from enum import StrEnum

from mailer.replies import _ENHANCED, Returned, read_returned


class Kind(StrEnum):
    """What an inbound message is."""

    REPORT = "delivery report"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe request"
    AUTOMATIC = "automatic reply"
    PERSONAL = "personal reply"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Failure:
    """One recipient a delivery report names, with what the report says of it."""

    address: str  # Final-Recipient (lower case)
    original: str  # Original-Recipient, when given (lower case)
    action: str
    status: tuple[int, int, int] | None
    text: str  # the diagnostic, for staff and the ledger
    verdict: Returned

    def names(self, address: str) -> bool:
        """Whether this entry is about ``address``."""
        return address.lower() in (self.address, self.original)


_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "post_master")
_DAEMON_NAME = re.compile(
    r"mailer[- ]?daemon|postmaster|post_master|mail delivery (system|subsystem)|"
    r"ndr administrator|mail administrator",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliver|undelivered mail|returned mail|mail delivery fail|"
    r"delivery (status notification \(failure|failure|failed|has failed)|failure notice|"
    r"delivery status notification: error|non remis|unzustellbar|nicht zustellbar|"
    r"mail system error|message not delivered)",
    re.IGNORECASE,
)
_AUTO_PRECEDENCE = ("auto_reply", "bulk", "junk")
# Automatic-reply subjects after RFC 2047 decoding: English, French, Spanish, German,
# Portuguese, Italian, Dutch, Arabic, Russian and Chinese.
_AUTO_SUBJECT = re.compile(
    r"^\s*(\[?(auto(matic)?[- ]?(reply|response|answer)|autoreply|out of (the )?office|"
    r"absence|away from|on (annual )?leave|vacation|holiday|"
    r"r[ée]ponse automatique|absent|message d'absence|"
    r"respuesta autom[áa]tica|fuera de la oficina|ausencia|"
    r"automatische antwort|abwesenheit|nicht im b[üu]ro|"
    r"resposta autom[áa]tica|fora do escrit[óo]rio|aus[êe]ncia|"
    r"risposta automatica|fuori sede|automatisch antwoord|afwezig|"
    r"رد تلقائي|الرد التلقائي|خارج المكتب|"
    r"автоматический ответ|автоответ|нет на месте|вне офиса|"
    r"自动回复|自動回覆|自動回复|自动答复|不在办公室|外出))",
    re.IGNORECASE,
)


def parse(raw: bytes) -> Message:
    """A message from its bytes; every charset Python knows stays readable."""
    return BytesParser(policy=policy.compat32).parsebytes(raw)


def classify(message: Message, *, unsubscribe_address: str | None = None) -> Kind:
    """What ``message`` is, by the rules in the module's docstring."""
    try:
        return _classify(message, unsubscribe_address)
    except Exception:  # a structure nothing can walk: reported, never a stop
        return Kind.UNREADABLE


def _classify(message: Message, unsubscribe_address: str | None) -> Kind:
    types = {part.get_content_type() for part in own_parts(message)}
    if types & set(_DSN_TYPES) or message.get("X-Failed-Recipients"):
        return Kind.REPORT
    if "message/feedback-report" in types:
        return Kind.COMPLAINT
    report_type = str(message.get_param("report-type", "") or "").lower()
    if report_type == "disposition-notification" or "message/disposition-notification" in types:
        return Kind.AUTOMATIC
    # Reports go to our envelope sender, never to the unsubscribe address: mail there is
    # a request whatever else it looks like (Apple Mail marks its own auto-replied).
    if unsubscribe_address and sent_to_base(message, unsubscribe_address) is not None:
        return Kind.UNSUBSCRIBE
    if _from_a_daemon(message) or any(flufl_failures(message)):
        return Kind.REPORT
    if is_automatic(message):
        return Kind.AUTOMATIC
    if _BOUNCE_SUBJECT.match(_header(message, "Subject")):
        return Kind.REPORT
    return Kind.PERSONAL


def own_parts(message: Message) -> Iterator[Message]:
    """The message and its parts, never what a ``message/rfc822`` attachment holds: a
    person forwarding a bounce has not sent one."""
    yield message
    if message.get_content_maintype() == "multipart" and isinstance(message.get_payload(), list):
        for part in message.get_payload():
            if isinstance(part, Message):
                yield from own_parts(part)


def _from_a_daemon(message: Message) -> bool:
    """From MAILER-DAEMON or postmaster, by address or name (``MAILER-DAEMON <>``)."""
    sender = _header(message, "From")
    local = parseaddr(sender)[1].lower().partition("@")[0]
    return local in _DAEMONS or bool(_DAEMON_NAME.search(sender))


def is_automatic(message: Message) -> bool:
    """RFC 3834 and the common non-standard marks of an automatic reply."""
    auto = _header(message, "Auto-Submitted").strip().lower()
    if auto and re.split(r"[\s;(]", auto, maxsplit=1)[0] != "no":
        return True
    if message.get("X-Autoreply") or message.get("X-Autorespond"):
        return True
    if _header(message, "Precedence").strip().lower() in _AUTO_PRECEDENCE:
        return True
    return bool(_AUTO_SUBJECT.match(_header(message, "Subject")))


def _header(message: Message, name: str) -> str:
    """A header's text, RFC 2047 words decoded; '' when absent or undecodable."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # an unknown charset in an encoded word
        return str(value)


def delivered_to(message: Message) -> list[str]:
    """The addresses a message was delivered to, as the receiving server recorded them."""
    names = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
    values = [str(v) for name in names for v in message.get_all(name, [])]
    return [address for _, address in getaddresses(values) if address]


def sent_to_base(message: Message, base: str) -> str | None:
    """The address (``base`` or a ``local+detail@domain`` subaddress of it) the message reached."""
    local, _, domain = base.lower().rpartition("@")
    for address in delivered_to(message):
        their_local, _, their_domain = address.lower().rpartition("@")
        if their_domain == domain and (their_local == local or their_local.startswith(local + "+")):
            return address
    return None


def text_of(part: Message) -> str:
    """A leaf part's decoded text (an unknown charset read as Latin-1)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("latin-1")


def failures(message: Message) -> list[Failure]:
    """Every recipient a delivery report names, with its action, code and verdict."""
    found = _dsn_failures(message)
    if found:
        return found
    return _nonstandard_failures(message)


def _dsn_failures(message: Message) -> list[Failure]:
    entries: list[Failure] = []
    for part in own_parts(message):
        if part.get_content_type() in _DSN_TYPES:
            for fields in _field_blocks(part):
                entry = _entry(fields)
                if entry is not None:
                    entries.append(entry)
    failed_header = message.get("X-Failed-Recipients")
    if not entries and failed_header:
        body = _body_text(message)
        for _, address in getaddresses([str(failed_header)]):
            if address:
                entries.append(_from_words(address.lower(), body, None))
    return entries


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The field groups of a delivery-status part (per message, then per recipient)."""
    payload = part.get_payload()
    texts: list[str] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                texts.append("".join(f"{k}: {v}\n" for k, v in block.items()))
                rest = block.get_payload()
                if isinstance(rest, str) and rest.strip():
                    texts.append(rest)
    else:
        texts.append(text_of(part))
    blocks: list[dict[str, str]] = []
    for text in texts:
        for chunk in re.split(r"\r?\n\s*\r?\n", text):
            fields: dict[str, str] = {}
            name = ""
            for line in chunk.splitlines():
                if line[:1] in (" ", "\t") and name:
                    fields[name] += " " + line.strip()
                elif ":" in line:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    fields[name] = value.strip()
            if fields:
                blocks.append(fields)
    return blocks


def _entry(fields: dict[str, str]) -> Failure | None:
    """A per-recipient field group as a Failure (None for the per-message group)."""
    final = _address_field(fields.get("final-recipient", ""))
    if not final:
        return None
    text = fields.get("diagnostic-code", "").partition(";")[2].strip() or fields.get(
        "diagnostic-code", ""
    )
    status = _status(fields.get("status", ""), text)
    action = fields.get("action", "failed").lower() or "failed"
    return Failure(
        address=final,
        original=_address_field(fields.get("original-recipient", "")),
        action=action,
        status=status,
        text=text[:300],
        verdict=read_returned(action, status, text),
    )


def _address_field(value: str) -> str:
    """``rfc822; someone@example.org`` (or ``utf-8; …``) as a bare lower-case address."""
    address = value.partition(";")[2] if ";" in value else value
    return address.strip().strip("<>").strip().lower()


def _status(field: str, diagnostic: str) -> tuple[int, int, int] | None:
    """The recipient's code: the one in the remote server's reply when it names one
    (``Status: 5.1.1`` over ``550 5.7.1 IP blacklisted`` is a guess), else ``Status:``."""
    stated = _code_in(field)
    said = _code_in(diagnostic)
    if said is not None and (said[2] != 0 or stated is None):
        return said  # the receiving server's own words beat the reporting MTA's summary
    return stated or said


def _code_in(text: str) -> tuple[int, int, int] | None:
    match = _ENHANCED.search(text or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


_DETECTED: weakref.WeakKeyDictionary[Message, tuple[set[bytes], set[bytes]]] = (
    weakref.WeakKeyDictionary()
)
DETECTOR_LIMIT = 1024 * 1024  # bytes of text parts flufl.bounce's detectors read at most
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False  # its detectors log every odd message


def flufl_failures(message: Message) -> tuple[set[bytes], set[bytes]]:
    """flufl.bounce's (temporary, permanent) addresses; nothing when it cannot read them.

    Run once per message, and not on messages whose text is larger than
    ``DETECTOR_LIMIT`` (a person's reply with a large attachment took seconds):
    reports in its formats are small, and larger ones carry a standard part.
    """
    if message in _DETECTED:
        return _DETECTED[message]
    from flufl.bounce import all_failures

    found: tuple[set[bytes], set[bytes]] = (set(), set())
    if _text_size(message) <= DETECTOR_LIMIT:
        try:
            temporary, permanent = all_failures(_without_attached_messages(message))
            found = (set(temporary), set(permanent))
        except Exception:  # its detectors meet every odd message there is
            pass
    _DETECTED[message] = found
    return found


def _without_attached_messages(message: Message) -> Message:
    """A shallow copy without ``message/rfc822`` attachments, for the detectors: a bounce a
    person attached to a reply is not a bounce of ours."""
    if not message.is_multipart() or message.get_content_maintype() != "multipart":
        return message
    parts: list[Message | str] = [
        _without_attached_messages(part)
        for part in message.get_payload()
        if isinstance(part, Message) and part.get_content_type() != "message/rfc822"
    ]
    clone = copy.copy(message)
    clone.set_payload(parts)
    return clone


def _text_size(message: Message) -> int:
    """The size of every leaf part's encoded payload."""
    total = 0
    for part in message.walk():
        payload = part.get_payload()
        if isinstance(payload, str):
            total += len(payload)
    return total


def _nonstandard_failures(message: Message) -> list[Failure]:
    """Failures of a report in a non-standard format (Exim, qmail, Lotus …): flufl.bounce
    finds the addresses; the code and words near each address decide. A warning that
    delivery is only delayed (Exim's "Warning: message … delayed") is ``delayed``."""
    temporary, permanent = flufl_failures(message)
    body = _body_text(message)
    if not temporary and not permanent:
        ours = {a.lower() for a in delivered_to(message)}
        ours.add(parseaddr(_header(message, "From"))[1].lower())
        entries = _listed_failures(body, ours)
    else:
        entries = []
        for raw, is_permanent in [(a, False) for a in temporary - permanent] + [
            (a, True) for a in permanent
        ]:
            address = raw.decode("utf-8", "replace").strip().strip("<>").lower()
            if address:
                entries.append(_from_words(address, body, is_permanent))
    if _DELAY.search(_header(message, "Subject")) or _DELAY.search(body[:3000]):
        entries = [replace(e, action="delayed", verdict=Returned.NONE) for e in entries]
    return entries


_DELAY = re.compile(
    r"\bdelayed\b|delivery delay|not (yet )?been delivered yet|has not yet been delivered|"
    r"will (continue|keep) (trying|to try)|will be retried|still (being )?retried|"
    r"no action is required on your part",
    re.IGNORECASE,
)


def _from_words(address: str, body: str, permanent: bool | None) -> Failure:
    """A failure read from the words near ``address`` in the report's text: the first
    place it is followed by an enhanced code, else by a reply code, else the first."""
    lines = body.splitlines()
    windows = [
        _window(lines, number, address)
        for number, line in enumerate(lines)
        if address in line.lower()
    ]
    window = next(
        (w for w in windows if _code_in(w)),
        next((w for w in windows if _REPLY.search(w)), windows[0] if windows else ""),
    )
    if not _code_in(window) and not window.strip(" :<>" + address):
        window = body[:2000]
    text = " ".join(window.split())[:300]
    status = _code_in(text)
    verdict = read_returned("failed", status, text, permanent)
    return Failure(address, "", "failed", status, text, verdict)


def _window(lines: list[str], start: int, address: str) -> str:
    """The line naming ``address`` and up to three after it, until one names another."""
    taken = [lines[start].strip()]
    for line in lines[start + 1 : start + 4]:
        if any(a.lower() != address for a in _ADDRESS.findall(line)):
            break
        taken.append(line.strip())
    return " ".join(taken)


_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_REPLY = re.compile(r"\b[45]\d\d\b|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}(?![\d.])")


def _listed_failures(body: str, ours: set[str]) -> list[Failure]:
    """A report no detector knows (Exchange's text-only NDR …): each address in its text
    followed, within a few lines, by an SMTP reply; the words there decide. The report's
    own sender and addressees (``ours``: the returned message's sender) are not failures."""
    lines = body.splitlines()
    found: dict[str, Failure] = {}
    for number, line in enumerate(lines):
        for address in _ADDRESS.findall(line):
            address = address.lower().rstrip(".")
            window = _window(lines, number, address)
            if address in found or address in ours or address.partition("@")[0] in _DAEMONS:
                continue
            if "mail from" in line.lower():
                continue
            if _code_in(window):  # an enhanced code: "office 501" or "room 512" is none
                found[address] = _from_words(address, body, None)
    return list(found.values())


def _body_text(message: Message) -> str:
    """The report's human-readable text: its first text parts, not the returned message."""
    texts = []
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_maintype() == "text":
            texts.append(text_of(part))
    return "\n".join(texts)[:20000]


def feedback_type(message: Message) -> str:
    """A complaint's ``Feedback-Type`` (``abuse``, ``not-spam`` …), lower case."""
    for part in own_parts(message):
        if part.get_content_type() == "message/feedback-report":
            for fields in _field_blocks(part):
                if "feedback-type" in fields:
                    return fields["feedback-type"].split()[0].lower()
    return "unknown"
