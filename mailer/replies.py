"""What an SMTP reply means for the recipient, the run and the suppression list.

One table, used by the sender (replies at send time) and by the suppression
rules, so the two can never disagree. A mail engineer's reading of RFC 5321
reply codes and RFC 3463 enhanced status codes:

- 2xx: **sent**.
- 4xx (or a timeout, a dropped connection): **transient**; retried, then deferred.
  A 4xx that asks us to slow down (421, 4.7.x throttling, Exchange's 4.3.2
  concurrent-connection refusal) is **slow down**: one connection fewer and a
  pause, and the try is not counted.
- 5xx whose enhanced code names a dead mailbox (X.1.1 bad mailbox, X.1.3 bad
  syntax, X.1.6 mailbox moved, X.1.10 null MX, X.2.1 mailbox disabled):
  **failed**, and the address is suppressed for every later issue.
- 5xx about the relay, the sender or the message, not the mailbox (X.1.7 and
  X.1.8 bad sender, Exchange's 5.1.90 daily limit, X.2.2 quota, X.3.x system
  and size, X.4.x routing, X.5.x protocol, X.6.x content, X.7.x policy and
  authentication, or a text saying "relay", "quota" or "limit"): **relay**; the
  run stops, the recipient stays pending, nobody is marked failed or suppressed,
  and the message says what to fix.
- Any other 5xx (a bare ``550`` without an enhanced code, X.1.2, X.2.3 …):
  **failed** for that recipient, never suppressed (the address may be fine).
  The sender also stops as a relay problem when such a reply repeats for many
  recipients in a row (see ``delivery.RELAY_STREAK``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    """What one reply means."""

    SENT = "sent"
    FAILED = "failed"  # this recipient, permanently
    TRANSIENT = "transient"  # try again later
    SLOW_DOWN = "slow down"  # the relay is throttling us: fewer connections, no try used
    RELAY = "relay"  # about the relay, sender or message: stop, keep pending
    FATAL = "fatal"  # login or TLS refused: stop, a setting must change


class Cause(StrEnum):
    """Why a relay problem stopped the run: picks the advice given to staff."""

    SENDER = "sender"
    QUOTA = "quota"
    SIZE = "size"
    POLICY = "policy"
    RELAY = "relay"
    SIGN_IN = "sign-in"  # password sign-in retired (Exchange Online's 5.7.30)


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_DEAD_MAILBOX = {(1, 1), (1, 3), (1, 6), (1, 10), (2, 1)}
_SENDER = {(1, 7), (1, 8)}
_QUOTA_TEXT = re.compile(r"quota|limit exceeded|rate limit|daily limit|too many", re.IGNORECASE)
_RELAY_TEXT = re.compile(r"\brelay(ing)?\b|authenticat", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """A reply's verdict, whether it proves the mailbox dead, and a relay cause."""

    verdict: Verdict
    mailbox_gone: bool = False
    cause: Cause | None = None


def enhanced_code(text: str | None) -> tuple[int, int, int] | None:
    """The RFC 3463 code at the start of a reply text (``5.1.1 User unknown``)."""
    match = _ENHANCED.search((text or "")[:40])
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def read_reply(code: int | None, text: str | None) -> Reading:
    """Class one reply (``code`` None: no reply at all, a timeout or a drop)."""
    if code is not None and 400 <= code < 500 and _throttling(code, text):
        return Reading(Verdict.SLOW_DOWN)
    if code is None or 400 <= code < 500:
        return Reading(Verdict.TRANSIENT)
    if 200 <= code < 300:
        return Reading(Verdict.SENT)
    if not 500 <= code < 600:
        return Reading(Verdict.TRANSIENT)  # 1xx/3xx where an answer was due: odd, retry
    cause = _relay_cause(code, text)
    if cause is not None:
        return Reading(Verdict.RELAY, cause=cause)
    enhanced = enhanced_code(text)
    gone = enhanced is not None and enhanced[1:] in _DEAD_MAILBOX
    return Reading(Verdict.FAILED, mailbox_gone=gone)


def _throttling(code: int, text: str | None) -> bool:
    """421, 4.7.x (rate and policy throttling) or 4.3.2 (Exchange: too many connections)."""
    enhanced = enhanced_code(text)
    return code == 421 or (enhanced is not None and (enhanced[1] == 7 or enhanced[1:] == (3, 2)))


def _relay_cause(code: int, text: str | None) -> Cause | None:
    """Why a 5xx is about the relay, the sender or the message (None: the mailbox)."""
    enhanced = enhanced_code(text)
    body = text or ""
    if enhanced is not None:
        subject, detail = enhanced[1], enhanced[2]
        if (subject, detail) in _DEAD_MAILBOX:
            return None
        if (subject, detail) in _SENDER:
            return Cause.SENDER
        if (subject, detail) == (1, 90) or (subject, detail) == (2, 2):
            return Cause.QUOTA
        if (subject, detail) == (3, 4) or (code == 552 and subject == 3):
            return Cause.SIZE
        if subject == 7:
            return Cause.RELAY if _RELAY_TEXT.search(body) else Cause.POLICY
        if subject in (3, 4, 5, 6):
            return Cause.POLICY
    if _QUOTA_TEXT.search(body):
        return Cause.QUOTA
    if _RELAY_TEXT.search(body):
        return Cause.RELAY
    return None


ADVICE = {
    Cause.SENDER: "the relay refuses our sender address: check MAILER_FROM (and "
    "MAILER_BOUNCE_ADDRESS) and that the relay account may send as it.",
    Cause.QUOTA: "the relay's sending quota is used up: wait until it resets (often a day) or "
    "ask for a higher limit, then run the same command again.",
    Cause.SIZE: "the message is larger than the relay accepts: make the images smaller or host "
    "them under MAILER_ARCHIVE_URL (mailer check shows each variant's size).",
    Cause.POLICY: "the relay's policy refuses our messages: check the relay account, its "
    "permissions and the sender's SPF/DKIM with the relay's administrator.",
    Cause.SIGN_IN: "the relay no longer accepts password sign-in (Basic authentication): set "
    "MAILER_SMTP_AUTH=xoauth2 and the MAILER_OAUTH_* settings (README, 'Microsoft 365').",
    Cause.RELAY: "the relay will not relay for us: check MAILER_SMTP_HOST, the login "
    "(MAILER_SMTP_USERNAME) and that the relay allows this sender.",
}
