"""Settings from the environment and ``.env`` (pydantic-settings), validated once.

The variable names are part of the product contract (README, "Settings").
A wrong value becomes a :class:`ConfigError` naming the variable; the value itself
is never echoed, so a password cannot leak through an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailer.errors import ConfigError

if TYPE_CHECKING:
    from mailer.quota import Limit

PLACEHOLDER_FROM = "Bulletin preview <bulletin@example.org>"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Provider presets (README, "Microsoft 365", checked 2026-11-28). Exchange Online
# allows a mailbox 30 messages a minute and 10,000 recipients a day, and refuses
# more than 3 concurrent SMTP AUTH sessions (432 4.3.2); the daily figure keeps
# 10% headroom for mail the mailbox sends otherwise, which the ledgers do not see.
PRESETS: dict[str, dict[str, object]] = {
    "microsoft365": {
        "smtp_host": "smtp.office365.com",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "smtp_auth": "xoauth2",
        "oauth_scope": "https://outlook.office365.com/.default",
        "max_connections": 3,
        "rate_limits": "30/minute, 9000/day",
    }
}
_LOOPBACK_HTTP = re.compile(r"^http://(127\.0\.0\.1|localhost)(:\d+)?(/|$)")
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


def parse_duration(text: str) -> timedelta:
    """``72h``, ``30m``, ``3d`` or plain seconds: how staff write a window."""
    if text.strip().isdigit():
        return timedelta(seconds=int(text))
    match = _DURATION.match(text)
    if not match:
        raise ValueError("expected a duration such as 72h, 90m or 3d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class SmtpSettings:
    """What an SMTP connection needs (``smtp.py``), and nothing else."""

    host: str
    port: int
    security: str  # starttls | tls | none
    username: str | None
    password: SecretStr | None  # None unless signing in by password
    timeout: float
    sign_in: str  # password | xoauth2 | none


@dataclass(frozen=True)
class OAuthSettings:
    """What the client-credentials token request needs (``oauth.py``)."""

    token_url: str | None
    client_id: str | None
    client_secret: SecretStr | None
    scope: str | None
    timeout: float


@dataclass(frozen=True)
class ImapSettings:
    """What signing in to the inbound mailbox and walking its folders needs (``inbox.py``)."""

    host: str | None
    port: int  # the setting, else 993 for tls and 143 otherwise
    security: str  # tls | starttls | none
    username: str | None
    password: SecretStr | None
    auth: str  # password | xoauth2
    folder: str
    done_folder: str
    timeout: float
    oauth: OAuthSettings


def parse_locales(text: str) -> dict[str, str]:
    """``en=en_GB, fr=fr_CH``: a Babel locale per bulletin language, each checked."""
    from babel import Locale, UnknownLocaleError

    from mailer.bulletin import LANGUAGES

    found: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        language, _, locale = (s.strip() for s in part.partition("="))
        if language not in LANGUAGES or not locale:
            raise ValueError(
                f"'{part}': expected language=locale with a language among "
                f"{', '.join(LANGUAGES)}, e.g. en=en_GB"
            )
        try:
            parsed = Locale.parse(locale)
        except (ValueError, UnknownLocaleError):
            raise ValueError(
                f"'{locale}' is not a locale Babel knows (e.g. en_GB, fr_CH)"
            ) from None
        if parsed.language != language:
            raise ValueError(f"'{locale}' is not a locale of language '{language}'")
        found[language] = str(parsed)
    return found


class Settings(BaseSettings):
    """Every ``MAILER_*`` setting, with its default (README, "Settings")."""

    model_config = SettingsConfigDict(
        env_prefix="MAILER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,  # an empty variable (as CI passes unset ones) means "default"
    )

    smtp_host: str = "localhost"
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(30.0, gt=0)
    # Seconds to wait on the endpoint, the mailbox and the token endpoint (not the relay).
    network_timeout: float = Field(30.0, gt=0)
    # How to sign in: a password, an OAuth2 token (SASL XOAUTH2), or not at all.
    # Unset: "password" when MAILER_SMTP_USERNAME is set, else "none".
    smtp_auth: Literal["password", "xoauth2", "none"] | None = None
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_scope: str | None = None
    from_: str | None = Field(None, alias="MAILER_FROM")
    reply_to: str | None = None
    max_connections: int = Field(4, ge=1, le=100)
    # Seconds before a temporary failure is retried within a run; each later retry waits
    # three times longer (2, 6, 18 s: about 26 s in all), then it is left deferred.
    retry_delay: float = Field(2.0, gt=0, le=600)
    rate_per_second: float = Field(0.0, ge=0)
    rate_limits: str | None = None  # "30/minute, 10000/day": see quota.py
    provider: Literal["microsoft365"] | None = None  # a preset; explicit settings win
    recipients_dir: Path = Path("recipients")
    ledger_dir: Path = Path("ledger")
    preview_dir: Path = Path("previews")
    templates_dir: Path | None = None
    list_id: str | None = None
    # The list's name as readers see it (List-Id's display name, the footer): stable
    # from issue to issue. Unset: MAILER_FROM's display name, else its domain.
    list_name: str | None = Field(None, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")
    unsubscribe_mailto: str | None = None
    unsubscribe_url: str | None = None
    unsubscribe_secret: SecretStr | None = None
    bounce_address: str | None = None
    bounce_secret: SecretStr | None = None
    bounce_soft_limit: int = Field(3, ge=0, le=100)  # 0: soft bounces never suppress
    dispatch_window: timedelta = timedelta(hours=72)
    # How long one run may send (e.g. 150m, below the CI job's time limit); then it stops
    # like a quota pause (exit 75, the rest pending) and a later run continues.
    send_budget: timedelta | None = None
    archive_url: str | None = None
    # The organization's logo on the readers' pages (archive, unsubscribe): an https URL.
    logo_url: str | None = None
    # The Atom feeds' id (RFC 4151 tag: URI), set once and never changed.
    feed_tag: str | None = Field(
        None, pattern=r"^tag:[A-Za-z0-9.@-]+,\d{4}(-\d{2}){0,2}:[\x21-\x7e]*$"
    )
    # The unsubscribe endpoint (mailer serve) and its export, read by mailer sync.
    serve_db: Path = Path("unsubscribe.sqlite3")
    serve_api_token: SecretStr | None = None
    serve_url: str | None = None
    sync_max_age: timedelta = timedelta(hours=24)  # a real send refuses an older sync
    # The inbound mailbox (bounces, unsubscribe mail, complaints), read by mailer sync.
    imap_host: str | None = None
    imap_port: int | None = Field(None, ge=1, le=65535)  # default: 993 (tls), else 143
    imap_security: Literal["tls", "starttls", "none"] = "tls"
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    # password, or xoauth2 with the MAILER_OAUTH_* settings (Microsoft 365: IMAP.AccessAsApp).
    imap_auth: Literal["password", "xoauth2"] = "password"
    imap_folder: str = "INBOX"
    imap_done_folder: str = "Processed"
    # The receiving server's name in Authentication-Results (RFC 8601): only its results
    # vouch for a mailed unsubscribe's sender. Unset: no such header is trusted.
    imap_authserv_id: str | None = None
    # Seconds a real send retries the archive's pages before refusing (a deploy takes a minute).
    archive_wait: float = Field(90.0, ge=0)
    # The Babel locale of each language's dates: "en=en_GB,fr=fr_CH,es=es_ES". Unset
    # languages keep language.DEFAULT_LOCALES (English: en_GB, "20 January 2027").
    locales: str | None = None
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key_file: Path | None = None

    @field_validator("dispatch_window", "sync_max_age", "send_budget", mode="before")
    @classmethod
    def _window(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _preset(self) -> Settings:
        """Fill what ``MAILER_PROVIDER`` knows, where no setting says otherwise."""
        for name, value in PRESETS.get(self.provider or "", {}).items():
            if name not in self.model_fields_set:
                setattr(self, name, value)
        return self

    @field_validator("rate_limits")
    @classmethod
    def _limits(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from mailer.quota import parse_limits

        parse_limits(value)  # raises ValueError naming the part it cannot read
        return value

    @field_validator("list_name")
    @classmethod
    def _list_name(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("locales")
    @classmethod
    def _locales(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_locales(value)  # raises ValueError naming the part it cannot read
        return value

    @property
    def list_display_name(self) -> str:
        """MAILER_LIST_NAME, else MAILER_FROM's display name, else its domain."""
        name, address = parseaddr(self.from_ or "")
        domain = address.rpartition("@")[2]
        return (self.list_name or "").strip() or name.strip() or domain or "Bulletin"

    @property
    def locale_map(self) -> dict[str, str]:
        """Each language's Babel locale: MAILER_LOCALES over language.DEFAULT_LOCALES."""
        from mailer.language import DEFAULT_LOCALES

        return {**DEFAULT_LOCALES, **parse_locales(self.locales or "")}

    @property
    def limits(self) -> tuple[Limit, ...]:
        """The parsed ``MAILER_RATE_LIMITS``."""
        from mailer.quota import parse_limits

        return parse_limits(self.rate_limits) if self.rate_limits else ()

    @field_validator("from_", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        name, address = parseaddr(value)
        whole = value == address or value.endswith(f"<{address}>")
        if any(c in value for c in "\r\n\0") or not whole or "<" in name or ">" in name:
            raise ValueError("expected 'Name <address>' or a bare address")
        from mailer.suppressions import normalize_address  # email-validator: only when set

        try:
            normalize_address(address)
        except ValueError as exc:
            raise ValueError(f"expected 'Name <address>' or a bare address ({exc})") from None
        return value

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, value: str | None) -> str | None:
        """RFC 2919: a list label and a domain, dot-separated (``bulletin.isu.example.org``)."""
        if value is None or value.strip() == "":
            return None
        value = value.strip().removeprefix("<").removesuffix(">")
        if len(value) > 255 or not _LIST_ID.fullmatch(value):
            raise ValueError("expected a list label and a domain, e.g. bulletin.isu.example.org")
        return value

    @field_validator("unsubscribe_url", "archive_url", "oauth_token_url", "serve_url", "logo_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if any(c.isspace() for c in value) or not (
            value.startswith("https://") or _LOOPBACK_HTTP.match(value)
        ):
            raise ValueError(
                "expected an absolute https:// URL (http:// only for 127.0.0.1 and localhost)"
            )
        return value.rstrip("/") if value.endswith("/") and value.count("/") > 3 else value

    @property
    def sign_in(self) -> str:
        """The effective sign-in method: password, xoauth2 or none."""
        if self.smtp_auth is not None:
            return self.smtp_auth
        return "password" if self.smtp_username else "none"

    @property
    def smtp(self) -> SmtpSettings:
        """The narrow view a connection to the relay is given."""
        by_password = self.sign_in == "password"
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,
            username=self.smtp_username,
            password=self.smtp_password if by_password else None,
            timeout=self.smtp_timeout,
            sign_in=self.sign_in,
        )

    @property
    def oauth(self) -> OAuthSettings:
        """The narrow view the token request is given (SMTP and IMAP share it)."""
        return OAuthSettings(
            token_url=self.oauth_token_url,
            client_id=self.oauth_client_id,
            client_secret=self.oauth_client_secret,
            scope=self.oauth_scope,
            timeout=self.network_timeout,
        )

    @property
    def imap(self) -> ImapSettings:
        """The narrow view the mailbox reader signs in and walks folders with."""
        return ImapSettings(
            host=self.imap_host,
            port=self.imap_port or (993 if self.imap_security == "tls" else 143),
            security=self.imap_security,
            username=self.imap_username,
            password=self.imap_password,
            auth=self.imap_auth,
            folder=self.imap_folder,
            done_folder=self.imap_done_folder,
            timeout=self.network_timeout,
            oauth=self.oauth,
        )

    def check_sign_in(self) -> None:
        """Refuse, naming the variable, a sign-in a real send could not complete."""
        needed: tuple[tuple[str, object], ...] = ()
        if self.sign_in == "xoauth2":
            needed = (
                ("MAILER_SMTP_USERNAME", self.smtp_username),
                ("MAILER_OAUTH_TOKEN_URL", self.oauth_token_url),
                ("MAILER_OAUTH_CLIENT_ID", self.oauth_client_id),
                ("MAILER_OAUTH_CLIENT_SECRET", self.oauth_client_secret),
                ("MAILER_OAUTH_SCOPE", self.oauth_scope),
            )
        elif self.sign_in == "password":
            needed = (
                ("MAILER_SMTP_USERNAME", self.smtp_username),
                ("MAILER_SMTP_PASSWORD", self.smtp_password),
            )
        for name, value in needed:
            if not value:
                raise ConfigError(
                    f"signing in with MAILER_SMTP_AUTH={self.sign_in} needs this setting.",
                    field=name,
                    file=".env / environment",
                )

    @field_validator("unsubscribe_mailto", "bounce_address")
    @classmethod
    def _mailto(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        address = value.removeprefix("mailto:")
        if "@" not in address or any(c.isspace() or c in "<>," for c in address):
            raise ValueError("expected an email address")
        return address


_ENV_NAMES = {"from_": "MAILER_FROM"}


def load_settings(**overrides: object) -> Settings:
    """Read settings once; turn pydantic's report into one message per variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        variable = _ENV_NAMES.get(name, name if name.startswith("MAILER_") else f"MAILER_{name}")
        raise ConfigError(
            f"invalid setting: {first['msg']}.", field=variable.upper(), file=".env / environment"
        ) from None
