"""Signing in to the relay with OAuth2 (SASL XOAUTH2), against a real token endpoint and a
real relay on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer import pipeline
from mailer.cli import app
from mailer.errors import DeliveryError
from mailer.ledger import read_records
from mailer.oauth import token_from_answer
from mailer.settings import Settings

from .conftest import SAMPLE, SAMPLE_RECIPIENTS
from .helpers import FAST, cli_env, drip, send_cli, settings_for, write_list
from .oauth_server import (
    CLIENT_ID,
    CLIENT_SECRET,
    EXPIRED_SECRET,
    MAILBOX,
    OAuthServer,
    TokenEndpoint,
)
from .smtp_server import Server, free_port

pytestmark = pytest.mark.system  # token endpoints over HTTP and real-time token expiry


def oauth_settings(endpoint: TokenEndpoint, port: int, tmp_path: Path, **extra: object) -> Settings:
    """Settings that sign in with XOAUTH2 through ``endpoint`` (``extra`` overrides)."""
    values: dict[str, object] = {
        "smtp_auth": "xoauth2",
        "smtp_username": MAILBOX,
        "oauth_token_url": endpoint.url,
        "oauth_client_id": CLIENT_ID,
        "oauth_client_secret": CLIENT_SECRET,
        "oauth_scope": "https://outlook.office365.com/.default",
    }
    return settings_for(port, tmp_path, **{**values, **extra})


def test_a_send_longer_than_a_tokens_life_delivers_everyone(tmp_path: Path) -> None:
    with TokenEndpoint(lifetime=2) as endpoint, OAuthServer(endpoint) as relay:
        settings = oauth_settings(endpoint, relay.port, tmp_path, rate_per_second=4)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
        assert report.total.sent == 13 and len(relay.received) == 13
        assert len(endpoint.issued) >= 2  # renewed during the send (13 at 4/s ≈ 3 s)
        assert relay.oauth.sign_ins >= 2
        assert all(r["grant_type"] == "client_credentials" for r in endpoint.requests)
        assert {r.get("scope") for r in endpoint.requests} == {
            "https://outlook.office365.com/.default"
        }


def test_an_expired_client_secret_stops_the_run_with_nothing_done(tmp_path: Path) -> None:
    with TokenEndpoint() as endpoint, OAuthServer(endpoint) as relay:
        endpoint.refusal = EXPIRED_SECRET
        env = _xoauth2_env(endpoint, relay.port, tmp_path / "ledger")
        result = send_cli(write_list(tmp_path / "recipients", 6), env)
        assert relay.received == []
    assert result.exit_code == 2, result.output
    assert "client secret has expired" in result.output
    assert "MAILER_OAUTH_CLIENT_SECRET" in result.output
    assert CLIENT_SECRET not in result.output
    records = list(read_records(tmp_path / "ledger" / "2017-03.jsonl"))
    assert not [r for r in records if r.outcome in ("sent", "failed")]


def test_a_token_the_relay_refuses_is_renewed_once_then_stops(tmp_path: Path) -> None:
    with TokenEndpoint() as endpoint, OAuthServer(endpoint) as relay:
        settings = oauth_settings(
            endpoint, relay.port, tmp_path, smtp_username="other@isu.example.org"
        )
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pytest.raises(DeliveryError) as raised, pipeline.open_ledger(job, settings) as ledger:
            pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
        assert relay.received == []
    assert len(endpoint.requests) == 2  # the cached token, refused, then one fresh one
    assert "Add-MailboxPermission" in str(raised.value)
    assert raised.value.exit_code == 2


def test_a_relay_that_retired_password_sign_in_says_what_to_change(tmp_path: Path) -> None:
    from aiosmtpd.smtp import AuthResult

    def retired(*args: object) -> AuthResult:
        return AuthResult(
            success=False,
            handled=False,
            message="550 5.7.30 Basic authentication is not supported for Client Submission",
        )

    with Server(authenticator=retired, auth_require_tls=False) as relay:
        settings = settings_for(
            relay.port, tmp_path, smtp_username=MAILBOX, smtp_password="a-password"
        )
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pytest.raises(DeliveryError) as raised, pipeline.open_ledger(job, settings) as ledger:
            pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
    assert "MAILER_SMTP_AUTH=xoauth2" in str(raised.value)
    assert "a-password" not in str(raised.value)


def test_xoauth2_without_its_settings_is_refused_naming_the_variable(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["send", str(SAMPLE), "--recipients", str(SAMPLE_RECIPIENTS), "--yes"],
        env={
            "MAILER_FROM": "ISU <news@isu.example.org>",
            "MAILER_UNSUBSCRIBE_MAILTO": "u@isu.example.org",
            "MAILER_SMTP_AUTH": "xoauth2",
            "MAILER_SMTP_USERNAME": MAILBOX,
        },
    )
    assert result.exit_code == 2 and "MAILER_OAUTH_TOKEN_URL" in result.output, result.output


def test_a_token_url_must_be_https_except_on_loopback() -> None:
    result = CliRunner().invoke(
        app,
        ["check", str(SAMPLE)],
        env={"MAILER_OAUTH_TOKEN_URL": "http://login.example.org/token"},
    )
    assert result.exit_code == 2 and "MAILER_OAUTH_TOKEN_URL" in result.output


def _xoauth2_env(endpoint: TokenEndpoint, port: int, ledger: Path) -> dict[str, str]:
    """``mailer send``'s environment for signing in with XOAUTH2 through ``endpoint``."""
    return {
        **cli_env(port, ledger),
        "MAILER_SMTP_AUTH": "xoauth2",
        "MAILER_SMTP_USERNAME": MAILBOX,
        "MAILER_OAUTH_TOKEN_URL": endpoint.url,
        "MAILER_OAUTH_CLIENT_ID": CLIENT_ID,
        "MAILER_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "MAILER_OAUTH_SCOPE": "https://outlook.office365.com/.default",
    }


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        # RFC 6749 §5.2: error_description is optional (this gave an IndexError).
        (401, b'{"error": "invalid_client"}', "refused the application (invalid_client)"),
        (400, b'{"error": "invalid_scope", "error_description": ""}', "MAILER_OAUTH_SCOPE"),
        (200, b'{"access_token": "t", "token_type": "Bearer", "expires_in": "soon"}', "expires_in"),
        (200, b'{"access_token": "t", "token_type": "mac", "expires_in": 3600}', "not Bearer"),
        (200, b"<html><body>Sign in to your account</body></html>", "not a token response"),
        (502, b"Bad Gateway", "not a token response (HTTP 502)"),
        (200, b'{"access_token": "", "token_type": "Bearer"}', "without an access token"),
        # 1 followed by 400 zeros raised an OverflowError: a traceback.
        (
            200,
            b'{"access_token": "t", "token_type": "Bearer", "expires_in": 1' + b"0" * 400 + b"}",
            "expires_in",
        ),
        (200, b'{"access_token": "t", "token_type": "Bearer", "expires_in": true}', "expires_in"),
        (400, b'{"error": "' + b"x\\n" * 3000 + b'"}', "refused to issue a token"),
    ],
)
def test_every_odd_token_answer_is_one_clear_line_and_exit_2(
    tmp_path: Path, status: int, body: bytes, says: str
) -> None:
    with TokenEndpoint() as endpoint, OAuthServer(endpoint) as relay:
        endpoint.raw = (status, body, {})
        result = send_cli(
            write_list(tmp_path / "recipients", 3),
            _xoauth2_env(endpoint, relay.port, tmp_path / "ledger"),
        )
        assert relay.received == []
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert says in " ".join(result.output.split())
    assert CLIENT_SECRET not in result.output


def test_the_client_secret_never_follows_a_redirect(tmp_path: Path) -> None:
    with TokenEndpoint() as elsewhere, TokenEndpoint() as endpoint, OAuthServer(endpoint) as relay:
        endpoint.raw = (307, b"", {"Location": elsewhere.url})
        result = send_cli(
            write_list(tmp_path / "recipients", 3),
            _xoauth2_env(endpoint, relay.port, tmp_path / "ledger"),
        )
    assert result.exit_code == 2 and "redirect (307)" in result.output
    assert endpoint.requests and elsewhere.requests == []  # the secret stayed home


def test_a_numeric_string_expires_in_is_a_number_of_seconds() -> None:
    body = b'{"access_token": "t", "token_type": "bearer", "expires_in": "3599"}'
    token = token_from_answer(200, body, started=1000.0)
    assert token.renew_at == 1000.0 + 3599 - 300  # renewed 5 minutes before it expires


def test_the_token_goes_after_the_servers_334_never_on_the_auth_line(tmp_path: Path) -> None:
    """A 2 KB token as an initial response made a 2,659-octet command (RFC 4954 §4);
    Postfix's default line limit refuses it."""
    with TokenEndpoint() as endpoint, OAuthServer(endpoint) as relay:
        settings = oauth_settings(endpoint, relay.port, tmp_path)
        job = pipeline.prepare(SAMPLE, settings, dry_run=False)
        with pipeline.open_ledger(job, settings) as ledger:
            report = pipeline.deliver(job, settings, ledger, ledger.state(), policy=FAST)
        assert report.total.sent == 13
        assert relay.oauth.initial_responses and not any(relay.oauth.initial_responses)


def test_a_token_endpoint_dripping_its_answer_cannot_hold_the_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token endpoint sending a byte every half second held every SMTP connection (they
    wait for the one token fetch) with no end."""
    import asyncio
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mailer import oauth

    monkeypatch.setattr(oauth, "ANSWER_SECONDS", 1.0)

    class Drip(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            drip(self, pause=0.25, limit=40)  # bounded: 10 s at most

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Drip)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    settings = settings_for(
        25,
        tmp_path,
        smtp_auth="xoauth2",
        smtp_username=MAILBOX,
        oauth_token_url=f"http://127.0.0.1:{server.server_address[1]}/token",
        oauth_client_id=CLIENT_ID,
        oauth_client_secret=CLIENT_SECRET,
    )
    started = time.monotonic()
    try:
        with pytest.raises(oauth.TokenUnavailable) as raised:
            asyncio.run(oauth.TokenSource(settings.oauth).token())
    finally:
        server.shutdown()
        server.server_close()
    assert "still coming" in str(raised.value) and time.monotonic() - started < 6
