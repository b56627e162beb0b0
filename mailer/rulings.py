"""What a send does after each reply: the reply policy, pure and synchronous.

``replies.py`` reads one reply (sent, failed, temporary, about the relay…). This
module remembers what came before within one run and rules on the recipient
and on the run:

- 2xx: **sent**; 5xx naming a dead mailbox: **failed**.
- The same unexplained 5xx (no enhanced code naming the mailbox) for
  ``RELAY_STREAK`` recipients in a row, with no success between: the relay is
  refusing us, not that many dead mailboxes ("550 relay not permitted"). The
  streak's recipients are recorded ``held`` (pending) again and the run stops.
- A refusal about the relay, the sender or the message (policy, size…): the
  recipient is ``held`` and the run stops with advice. The relay's own quota
  (Exchange's 5.1.90) is a pause, like our own quota windows.
- 4xx, a timeout or a dropped connection: retried in this run until the last
  attempt, then **deferred**; "slow down" (421, 4.7.x throttling) retries the
  same attempt on one connection fewer. ``max_consecutive_transient`` temporary
  failures in a row (no success or failure between) pause the run.
- A refused login, a refused token or a TLS failure stops the run at once.

Nothing here waits, sends or writes: :class:`ReplyPolicy` takes readings and
returns :class:`Ruling` values, so every rule is tested in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mailer import smtp
from mailer.ledger import Outcome
from mailer.replies import ADVICE, Cause, Reading, Verdict, enhanced_code

# The same unexplained 5xx for this many recipients in a row is the relay refusing us.
RELAY_STREAK = 5
# After the relay itself says its quota is used up: when the summary says to try again.
RELAY_QUOTA_PAUSE = 3600.0


class Action(Enum):
    """What happens to one message after one try."""

    SENT = "sent"  # recorded sent: done
    FAILED = "failed"  # recorded failed: done (suppressed if the mailbox is gone)
    DEFERRED = "deferred"  # recorded deferred: the next run tries again
    RETRY = "retry"  # recorded deferred: tried again in this run, next attempt
    SLOW_DOWN = "slow down"  # recorded deferred: the same attempt, one connection fewer
    HELD = "held"  # recorded held (pending): the next run sends it, nobody is failed

    @property
    def outcome(self) -> Outcome:
        """The ledger outcome recorded for this try."""
        if self in (Action.RETRY, Action.SLOW_DOWN):
            return Outcome.DEFERRED
        return Outcome(self.value)

    @property
    def final(self) -> bool:
        """Whether this run is done with the message (counted in the run's report)."""
        return self in (Action.SENT, Action.FAILED, Action.DEFERRED)


class RunStop(Exception):
    """Stop the whole run; ``configuration`` when a setting must change."""

    def __init__(
        self, message: str, *, configuration: bool = True, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.configuration = configuration
        self.code = code


@dataclass(frozen=True)
class Ruling:
    """The policy's answer to one reply."""

    action: Action
    # Stop taking new messages, cleanly: why (status.exit_code picks the exit code:
    # 75 for a pause with nothing else wrong).
    stop: str | None = None
    pause: float | None = None  # seconds until sending may resume (the relay's quota)
    error: RunStop | None = None  # stop the run with this error, after recording
    # Earlier tries (recipient, attempt) recorded failed that are the relay's
    # refusal after all: recorded held again and no longer counted failed.
    unfailed: tuple[tuple[str, int], ...] = ()


@dataclass
class ReplyPolicy:
    """Remembers one run's recent replies and rules on each new one."""

    max_consecutive_transient: int = 50
    max_connect_failures: int = 3
    relay: str = "the relay"  # host:port, for messages
    _transient: int = 0
    _streak: list[tuple[str, int]] = field(default_factory=list)
    _streak_reply: tuple[int | None, tuple[int, int, int] | None] | None = None
    _relay_reply: tuple[int | None, tuple[int, int, int] | None] | None = None
    _connect_failures: int = 0
    _ever_connected: bool = False

    def judge(
        self,
        recipient: str,
        attempt: int,
        last: int,
        reading: Reading,
        code: int | None,
        text: str,
        *,
        stopping: bool = False,
        problem: smtp.SmtpProblem | None = None,
    ) -> Ruling:
        """Rule on one try of ``recipient`` (attempt ``attempt`` of at most ``last``);
        ``stopping``: the run is already stopping (no retry is scheduled then)."""
        if reading.verdict is Verdict.FATAL:
            return Ruling(Action.HELD, error=self.sign_in_error(problem))
        if reading.verdict is Verdict.RELAY:
            if reading.cause is Cause.QUOTA:
                return Ruling(
                    Action.HELD,
                    pause=RELAY_QUOTA_PAUSE,
                    stop=(
                        f"the relay says its sending quota is used up ('{code or ''} {text}'); "
                        "the rest stays pending. Try again later (the scheduled workflow "
                        "does, hourly); Exchange Online's daily limit is counted over 24 hours."
                    ),
                )
            return Ruling(Action.HELD, error=self._relay_stop(recipient, reading.cause, code, text))
        if reading.verdict is Verdict.SENT:
            self._streak.clear()
            self._transient = 0
            return Ruling(Action.SENT)
        if reading.verdict is Verdict.FAILED:
            return self._failed(recipient, attempt, reading, code, text)
        pause = self._count_transient()
        if reading.verdict is Verdict.SLOW_DOWN and not stopping:
            return Ruling(Action.SLOW_DOWN, stop=pause)
        if attempt < last and not stopping and pause is None:
            return Ruling(Action.RETRY)
        # The last try of this run, or the run stops (the one that pauses it included):
        # deferred for the next run, in the summary with its reply.
        return Ruling(Action.DEFERRED, stop=pause)

    def _failed(
        self, recipient: str, attempt: int, reading: Reading, code: int | None, text: str
    ) -> Ruling:
        key = (code, enhanced_code(text))
        if reading.mailbox_gone:
            self._transient = 0
            return Ruling(Action.FAILED)
        if self._relay_reply == key:
            # In flight when a streak stopped the run: the relay's refusal too.
            return Ruling(Action.HELD)
        self._transient = 0
        if key != self._streak_reply:
            self._streak.clear()
            self._streak_reply = key
        self._streak.append((recipient, attempt))
        if len(self._streak) < RELAY_STREAK:
            return Ruling(Action.FAILED)
        streak, self._streak = tuple(self._streak), []
        self._relay_reply = key
        return Ruling(
            Action.FAILED,
            unfailed=streak,
            error=self._relay_stop(recipient, Cause.RELAY, code, text, streak=len(streak)),
        )

    def _count_transient(self) -> str | None:
        """One more temporary failure in a row; the reason to pause once there are too many."""
        self._transient += 1
        if self._transient < self.max_consecutive_transient:
            return None
        return (
            f"paused after {self._transient} temporary failures in a row; "
            "the relay may be overloaded. Run the same command later to resume."
        )

    def connected(self) -> None:
        self._ever_connected = True
        self._connect_failures = 0

    def connection_failed(self, problem: smtp.SmtpProblem) -> Ruling:
        """A connection could not be opened: stop at once (login, TLS; ``error``), stop
        when the relay has refused every connection so far, or try again (RETRY, with a
        pause when too many temporary failures came in a row). The message was never
        tried: it goes back to the queue."""
        if smtp.classify(problem).verdict is Verdict.FATAL:
            return Ruling(Action.HELD, error=self.sign_in_error(problem))
        self._connect_failures += 1
        if not self._ever_connected and self._connect_failures >= self.max_connect_failures:
            return Ruling(
                Action.HELD,
                error=RunStop(
                    f"the relay {self.relay} refused every connection "
                    f"({smtp.describe(problem)}); nothing was sent.",
                    configuration=False,
                    code=getattr(problem, "code", None),
                ),
            )
        return Ruling(Action.RETRY, stop=self._count_transient())

    @property
    def connect_failures(self) -> int:
        return self._connect_failures

    def sign_in_error(self, problem: smtp.SmtpProblem | None) -> RunStop:
        """The run-stopping error for a refused login or token, or a TLS failure."""
        if isinstance(problem, smtp.TokenRefused):
            return RunStop(f"{problem} Nothing more was sent.")
        if isinstance(problem, smtp.AuthFailed):
            advice = (
                "the relay no longer accepts password sign-in (Basic authentication): set "
                "MAILER_SMTP_AUTH=xoauth2 and the MAILER_OAUTH_* settings (README, 'Microsoft 365')"
                if _basic_auth_retired(problem.text)
                else "check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD"
            )
            return RunStop(
                f"the relay refused the login ({problem.code} {problem.text}); {advice}. "
                "Nothing more was sent.",
                code=problem.code,
            )
        detail = smtp.describe(problem) if problem is not None else "refused"
        return RunStop(f"TLS with {self.relay} failed ({detail}); nothing more was sent.")

    def _relay_stop(
        self,
        recipient: str,
        cause: Cause | None,
        code: int | None,
        text: str,
        *,
        streak: int = 0,
    ) -> RunStop:
        """The run-stopping error for a refusal about the relay, the sender or the message."""
        reply = f"{code or ''} {text}".strip()
        seen = (
            f"the same refusal for {streak} recipients in a row ('{reply}')"
            if streak
            else f"'{reply}' for {recipient}"
        )
        return RunStop(
            f"the relay refused our mail: {seen}. This is about the relay, the sender or the "
            f"message, not the mailboxes: nobody was marked failed or suppressed for it, and "
            f"they stay pending. To fix: {ADVICE[cause or Cause.RELAY]}",
            code=code,
        )


def _basic_auth_retired(text: str) -> bool:
    """Exchange Online's refusal of password sign-in (5.7.30, 5.7.139, "basic authentication")."""
    lowered = text.lower()
    return "5.7.30" in text or "5.7.139" in text or "basic authentication" in lowered
