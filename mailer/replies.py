"""What a reply means for the reader, the run and the suppression list: sent or returned.

One table, used by the sender (replies at send time), by the bounce reader
(each failed recipient of a delivery report) and by the suppression rules, so
they can never disagree. The RFC 3463 enhanced status code decides first; the
reply's words only where the code is missing or says nothing (``X.0.0``).

=========================  =====================================  ==========================
reply                      at send time (``read_reply``)          returned later (``read_returned``)
=========================  =====================================  ==========================
2xx                        sent                                   (nothing)
4xx, timeout, drop         transient: retried, then deferred      soft bounce
421, 4.7.x, 4.3.2          slow down: a connection fewer, pause   soft bounce
5.1.1 5.1.2 5.1.3 5.1.6    failed; the address is suppressed      hard: the address is
5.1.10, Exchange's                                                suppressed
"5.4.1 … Access denied"
X.2.1 disabled, X.2.2      deferred (retried on later runs until  soft bounce
full, X.4.x routing        the dispatch window ends, then one
                           soft bounce)
X.2.2 naming Exchange's    relay: the run stops, "empty the       soft bounce
submission store           sending mailbox"
(STOREDRV, Submission,
QuotaExceeded)
X.1.7 X.1.8, 5.1.90,       relay: the run stops with advice,      refused: recorded, never
X.7.x, "quota"/"relay"     everyone stays pending                 suppressed
texts
X.2.3 X.3.x X.5.x X.6.x    failed, never suppressed (a streak     refused: recorded, never
other 5xx, bare 550        of one reply is the relay: stop)       suppressed
=========================  =====================================  ==========================

A *soft bounce* (one definition, used by the reader, ``status`` and reports)
is a returned report with ``Action: failed`` and a soft code, or a send-time
deferral that used up its retries. ``Action: delayed`` never counts, and
``delivered``/``relayed``/``expanded`` change nothing. A reader with soft
bounces on ``MAILER_BOUNCE_SOFT_LIMIT`` issues in a row is suppressed
(``bounces.soft_failures``); a delivery in between resets the count. Only the
hard set (the one the best-known bounce classifiers agree on: user unknown,
host unknown, has moved, does not accept mail) suppresses at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    """What one reply at send time means."""

    SENT = "sent"
    FAILED = "failed"  # this recipient, permanently
    TRANSIENT = "transient"  # try again later
    SLOW_DOWN = "slow down"  # the relay is throttling us: fewer connections, no try used
    RELAY = "relay"  # about the relay, sender or message: stop, keep pending
    FATAL = "fatal"  # login or TLS refused: stop, a setting must change


class Returned(StrEnum):
    """What one failed recipient of a delivery report means (the ledger holds the word)."""

    HARD = "hard"  # the address is dead: suppressed at once
    SOFT = "soft"  # full, disabled, delayed past retrying: counts towards the soft limit
    REFUSED = "refused"  # policy, reputation, sender, size, content: recorded, never suppressed
    NONE = "none"  # delayed, delivered, relayed, expanded: changes nothing


class Cause(StrEnum):
    """Why a relay problem stopped the run: picks the advice given to staff."""

    SENDER = "sender"
    QUOTA = "quota"
    SIZE = "size"
    POLICY = "policy"
    RELAY = "relay"
    OWN_MAILBOX = "own mailbox"  # Exchange: the sending mailbox (or its Sent Items) is full


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_DEAD_MAILBOX = {(1, 1), (1, 2), (1, 3), (1, 6), (1, 10)}
_SOFT_MAILBOX = {(2, 1), (2, 2)}  # disabled (often a suspended account that returns), full
_SENDER = {(1, 7), (1, 8)}
_QUOTA_TEXT = re.compile(r"quota|limit exceeded|rate limit|daily limit|too many", re.IGNORECASE)
_RELAY_TEXT = re.compile(r"\brelay(ing)?\b|authenticat", re.IGNORECASE)
# Exchange Online's own front door refuses a recipient that does not exist with an X.4.x.
_EXCHANGE_NO_SUCH = re.compile(r"recipient address rejected: access denied", re.IGNORECASE)
# Exchange's submission store at DATA: our own sending mailbox (or its Sent Items) is full.
_OWN_STORE = re.compile(r"STOREDRV|Submission|QuotaExceeded", re.IGNORECASE)
# Words that name a dead address when no specific code does (``5.0.0``, or none at all).
_DEAD_TEXT = re.compile(
    r"user unknown|unknown user|unknown (local[- ])?recipient|recipient unknown|"
    r"no such (user|mailbox|recipient|address|account|domain)|no mailbox here|"
    r"(user|mailbox|address|account|recipient|domain) (does not|doesn't|did not) exist|"
    r"(user|mailbox|recipient|address) not found|not a valid (mailbox|recipient|user)|"
    r"invalid (recipient|mailbox|address)|host (or domain name )?(not found|unknown)|"
    r"unknown (host|domain)|unrouteable address|domain not found|has moved|"
    r"(doesn't|does not) have an? [\w.-]+ account",
    re.IGNORECASE,
)
# Words that make a refusal about us, whatever its code: never a reason to suppress.
_POLICY_TEXT = re.compile(
    r"black ?list|block ?list|blocked|spamhaus|\bspam|reputation|\bpolicy|too many|"
    r"rate limit|\brbl\b|dnsbl|banned|listed (at|on|in)|"
    r"sender (verify|verification|address rejected|address refused|unknown|not allowed)|"
    r"verification failed|sender rejected",
    re.IGNORECASE,
)
_TRY_AGAIN = re.compile(r"try again|temporar|timed? ?out", re.IGNORECASE)
_FULL_TEXT = re.compile(r"mailbox (is )?full|over ?quota|quota exceeded", re.IGNORECASE)
_SOFT_TEXT = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?(storage|quota)|"
    r"insufficient (system )?storage|retry time(out)? (exceeded|expired)|timed? ?out|expired|"
    r"disabled|suspended|inactive|temporar",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Reading:
    """A reply's verdict, whether it proves the mailbox dead, and a relay cause."""

    verdict: Verdict
    mailbox_gone: bool = False
    cause: Cause | None = None


def enhanced_code(text: str | None, window: int = 40) -> tuple[int, int, int] | None:
    """The RFC 3463 code near the start of a reply text (``5.1.1 User unknown``)."""
    match = _ENHANCED.search((text or "")[:window])
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def proves_dead(code: tuple[int, int, int] | None, text: str | None) -> bool:
    """Whether a class-5 reply proves the address dead (the hard set; see the table)."""
    if code is None or code[0] != 5:
        return False
    return code[1:] in _DEAD_MAILBOX or (
        code[1] == 4 and bool(_EXCHANGE_NO_SUCH.search(text or ""))
    )


def read_reply(code: int | None, text: str | None, stage: str | None = None) -> Reading:
    """Class one reply at send time (``code`` None: no reply at all, a timeout or a drop).

    ``stage`` is the SMTP step that drew it (``rcpt``, ``data``; None when unknown).
    """
    if code is not None and 400 <= code < 500 and _throttling(code, text):
        return Reading(Verdict.SLOW_DOWN)
    if code is None or 400 <= code < 500:
        return Reading(Verdict.TRANSIENT)
    if 200 <= code < 300:
        return Reading(Verdict.SENT)
    if not 500 <= code < 600:
        return Reading(Verdict.TRANSIENT)  # 1xx/3xx where an answer was due: odd, retry
    enhanced = enhanced_code(text)
    if proves_dead(enhanced, text):
        return Reading(Verdict.FAILED, mailbox_gone=True)
    if enhanced is not None and enhanced[1:] in _SOFT_MAILBOX:
        if enhanced[1:] == (2, 2) and _OWN_STORE.search(text or ""):
            return Reading(Verdict.RELAY, cause=Cause.OWN_MAILBOX)
        return Reading(Verdict.TRANSIENT)  # this reader's mailbox: deferred, retried later
    if enhanced is not None and enhanced[1] == 4:
        return Reading(Verdict.TRANSIENT)  # routing to this reader's domain
    cause = _relay_cause(code, text)
    if cause is not None:
        return Reading(Verdict.RELAY, cause=cause)
    return Reading(Verdict.FAILED)


def read_returned(
    action: str | None,
    status: tuple[int, int, int] | None,
    text: str | None,
    permanent: bool | None = None,
) -> Returned:
    """Class one failed recipient of a delivery report.

    ``status`` is its RFC 3463 code (the DSN's ``Status:``, or the one its words
    hold); ``permanent`` the non-standard format's own verdict (flufl.bounce),
    used only where no code decides.
    """
    if (action or "failed").strip().lower() not in ("failed", "failure"):
        return Returned.NONE  # delayed, delivered, relayed, expanded
    words = text or ""
    if status is not None and status[0] == 4:
        return Returned.SOFT  # RFC 3463: "persistent transient", whatever Action says
    if _POLICY_TEXT.search(words):
        return Returned.REFUSED  # a blocklist or a rate, whatever the code claims
    if proves_dead(status, words):
        return Returned.SOFT if _FULL_TEXT.search(words) else Returned.HARD
    if status is not None and status[2] != 0:
        if status[1:] in _SOFT_MAILBOX or status[1] == 4:
            return Returned.SOFT
        return Returned.REFUSED
    # No code, or one that says nothing (X.0.0, X.1.0 …): the words decide.
    if _TRY_AGAIN.search(words):
        return Returned.SOFT  # "Host not found, try again": a DNS failure, not an answer
    if _DEAD_TEXT.search(words) and (status is None or status[1] not in (2, 4, 7)):
        return Returned.HARD
    if _SOFT_TEXT.search(words) or (status is not None and status[1] in (2, 4)):
        return Returned.SOFT
    if status is None and permanent is False:
        return Returned.SOFT
    return Returned.REFUSED


def _throttling(code: int, text: str | None) -> bool:
    """421, 4.7.x (rate and policy throttling) or 4.3.2 (Exchange: too many connections)."""
    enhanced = enhanced_code(text)
    return code == 421 or (enhanced is not None and (enhanced[1] == 7 or enhanced[1:] == (3, 2)))


def _relay_cause(code: int, text: str | None) -> Cause | None:
    """Why a 5xx is about the relay, the sender or the message (None: this recipient)."""
    enhanced = enhanced_code(text)
    body = text or ""
    if enhanced is not None:
        subject, detail = enhanced[1], enhanced[2]
        if (subject, detail) in _SENDER:
            return Cause.SENDER
        if (subject, detail) == (1, 90):
            return Cause.QUOTA
        if (subject, detail) == (3, 4) or (code == 552 and subject == 3):
            return Cause.SIZE
        if subject == 7:
            return Cause.RELAY if _RELAY_TEXT.search(body) else Cause.POLICY
        if subject in (3, 5, 6):
            return Cause.POLICY
        if (subject, detail) == (2, 3):
            return None  # too large for this reader's mailbox: this reader only
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
    Cause.OWN_MAILBOX: "the sending mailbox (or its Sent Items folder) is full at the relay: "
    "empty the sending mailbox, or stop the relay saving sent copies, then run the same "
    "command again.",
    Cause.RELAY: "the relay will not relay for us: check MAILER_SMTP_HOST, the login "
    "(MAILER_SMTP_USERNAME) and that the relay allows this sender.",
}
