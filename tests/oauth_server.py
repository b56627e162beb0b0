"""A real OAuth2 token endpoint and an XOAUTH2-checking SMTP relay, both on 127.0.0.1.

The endpoint issues short-lived tokens by the client-credentials grant (or
refuses the client, as Microsoft Entra ID does for an expired secret); the relay
(aiosmtpd) signs sessions in with SASL XOAUTH2, accepts only tokens the endpoint
issued and that have not expired, and refuses MAIL on a session whose token has
expired since, as a strict provider would.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from .smtp_server import Behaviour, Handler, Server, free_port

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "client-secret-for-tests"
MAILBOX = "newsletter@isu.example.org"
EXPIRED_SECRET = (
    "AADSTS7000222: The provided client secret keys for app '11111111' are expired. "
    "Visit the Azure portal to create new keys for your app."
)


class TokenEndpoint:
    """``POST /token`` with the client-credentials grant; tokens live ``lifetime`` s."""

    def __init__(self, lifetime: int = 3600) -> None:
        self.lifetime = lifetime
        self.issued: dict[str, float] = {}  # token -> expiry (time.time())
        self.requests: list[dict[str, str]] = []
        self.refusal: str | None = None  # an error description to answer with
        # An answer to give as it is: (status, body, extra headers), odd ones included.
        self.raw: tuple[int, bytes, dict[str, str]] | None = None
        self.username = MAILBOX  # whom a valid token signs in (RFC 7662 introspection)
        endpoint = self

        class Answer(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path.endswith("/introspect"):  # RFC 7662, as Dovecot asks it
                    active = endpoint.valid(form.get("token", ""))
                    status, body = 200, {"active": active, "username": endpoint.username}
                else:
                    endpoint.requests.append(form)
                    status, body = endpoint.answer(form)
                extra: dict[str, str] = {}
                if endpoint.raw is not None and not self.path.endswith("/introspect"):
                    status, data, extra = endpoint.raw
                else:
                    data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Answer)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tenant/oauth2/v2.0/token"

    @property
    def introspection_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/introspect"

    def answer(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        genuine = (
            form.get("grant_type") == "client_credentials"
            and form.get("client_id") == CLIENT_ID
            and form.get("client_secret") == CLIENT_SECRET
        )
        if self.refusal is not None or not genuine:
            description = self.refusal or "AADSTS7000215: Invalid client secret provided."
            return 401, {"error": "invalid_client", "error_description": description}
        token = secrets.token_urlsafe(24)
        self.issued[token] = time.time() + self.lifetime
        return 200, {"token_type": "Bearer", "expires_in": self.lifetime, "access_token": token}

    def valid(self, token: str) -> bool:
        return time.time() < self.issued.get(token, 0.0)

    def __enter__(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class OAuthHandler(Handler):
    """The test relay's handler, with SASL XOAUTH2 checked against the endpoint."""

    def __init__(self, behaviour: Behaviour, endpoint: TokenEndpoint) -> None:
        super().__init__(behaviour)
        self.endpoint = endpoint
        self.sign_ins = 0
        self.initial_responses: list[bool] = []  # per AUTH: did the token come on its line?

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        self.initial_responses.append(len(args) > 1)
        if len(args) > 1:
            raw = base64.b64decode(args[1])
        else:  # no initial response: ask for it with an empty challenge
            answer = await server.challenge_auth("", encode_to_b64=False)
            raw = answer if isinstance(answer, bytes) else b""
        fields = dict(
            (part.split("=", 1)[0], part.split("=", 1)[-1] if "=" in part else "")
            for part in raw.decode().split("\x01")
            if part
        )
        token = fields.get("auth", "").removeprefix("Bearer ")
        if fields.get("user") == MAILBOX and self.endpoint.valid(token):
            self.sign_ins += 1
            return AuthResult(success=True, auth_data=token)
        # As Google and Microsoft do: 334 with a base64 JSON error, then 535 after
        # the client's empty line.
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(
            success=False, handled=False, message="535 5.7.3 Authentication unsuccessful"
        )

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if not session.authenticated or not self.endpoint.valid(str(session.auth_data)):
            return "530 5.7.57 Client not authenticated to send mail (token expired)"
        envelope.mail_from = address
        return "250 OK"


class OAuthServer(Server):
    """An SMTP relay on 127.0.0.1 that takes only XOAUTH2 sign-ins."""

    def __init__(self, endpoint: TokenEndpoint, behaviour: Behaviour | None = None) -> None:
        super().__init__(behaviour, auth_require_tls=False)
        self.oauth = OAuthHandler(behaviour or Behaviour(), endpoint)
        self.handler_obj = self.handler = self.oauth

    def __enter__(self) -> OAuthServer:
        self.start()
        return self
