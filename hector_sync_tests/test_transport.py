"""Credentials stay with their host: a redirect is never followed.

Every call the clients make carries a credential: the C2 ITSM login POST its password, every other
C2 call a bearer token, every Hector call the API key. requests follows redirects by default and,
for a 307 or 308, sends the same body again to whatever host the Location names (it only drops
the Authorization header when the host changes, never the body, and keeps the header when only
the path changes). So a redirect answer must become a clear error naming where it pointed, and
nothing may reach that address.

Real servers on loopback: a "redirector" that answers with a redirect and a "recorder" that keeps
every request it receives, each an http.server in a thread on a free port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hector_sync.c2 import C2Client
from hector_sync.demo import DEMO_C2_PASSWORD, DEMO_C2_USERNAME, DEMO_HECTOR_API_KEY
from hector_sync.errors import ApiError, UnexpectedAnswer
from hector_sync.hector import HectorClient
from hector_sync.transport import RetryPolicy

FAST = RetryPolicy(total=2, backoff_factor=0.01, backoff_max=0.05, connect_timeout=2, read_timeout=5, breaker_s=0)
TOKEN = "c2-bearer-token-for-the-redirect-test-51f0"


@dataclass
class Received:
    """One request as a server read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# (method, path, handler) -> (status, extra headers, JSON body)
Answer = Callable[[str, str, "Server"], tuple[int, dict[str, str], Any]]


@dataclass
class Server:
    """A loopback HTTP server that records every request and answers with `answer`."""

    answer: Answer
    received: list[Received] = field(default_factory=list)
    url: str = ""
    host: str = ""


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            server.received.append(Received(self.command, self.path, dict(self.headers.items()), body))
            status, headers, payload = server.answer(self.command, self.path, server)
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = handle_any

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest would show the access log."""

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], Server]]:
    """`serve(answer)`: a started Server on a free loopback port; all are stopped after the test."""
    running: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> Server:
        server = Server(answer)
        http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        server.host = f"127.0.0.1:{http.server_address[1]}"
        server.url = f"http://{server.host}"
        threading.Thread(target=http.serve_forever, daemon=True).start()
        running.append(http)
        return server

    yield start
    for http in running:
        http.shutdown()
        http.server_close()


def ok(method: str, path: str, server: Server) -> tuple[int, dict[str, str], Any]:
    """What the recorder answers: a login token or an empty list, so a followed redirect succeeds."""
    if path.endswith("/auth/login"):
        return 200, {}, {"token": TOKEN, "expires_in": 3600}
    return 200, {}, {"items": [], "total": 0, "rows": []}


def redirect_to(target: Server | None, status: int, *, except_login: bool = False) -> Answer:
    """Answer every call (the login too, unless `except_login`) with `status` and a Location on
    `target` (the same path), or a path on the same server when `target` is None."""

    def answer(method: str, path: str, server: Server) -> tuple[int, dict[str, str], Any]:
        if except_login and path.endswith("/auth/login"):
            return ok(method, path, server)
        location = f"{target.url}{path}" if target is not None else f"/moved{path}"
        return status, {"Location": location}, {"error": {"code": "moved", "message": "moved"}}

    return answer


def no_secret_in(error: BaseException, *secrets: str) -> None:
    """Neither the error nor anything it chains names a secret."""
    cause: BaseException | None = error
    while cause is not None:
        for secret in secrets:
            assert secret not in str(cause) and secret not in repr(cause), cause
        cause = cause.__cause__ or cause.__context__


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirected_c2_login_sends_the_password_nowhere(
    serve: Callable[[Answer], Server], status: int
) -> None:
    recorder = serve(ok)
    redirector = serve(redirect_to(recorder, status))
    client = C2Client(redirector.url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)

    with client, pytest.raises(UnexpectedAnswer) as redirected:
        client.list_cmdbs()

    assert recorder.received == [], "the redirect was followed: the password went to another address"
    assert [(r.method, r.path) for r in redirector.received] == [("POST", "/api/v1/auth/login")]
    assert str(redirected.value) == (
        f"C2 ITSM answered POST /api/v1/auth/login with a redirect to {recorder.host}; "
        "credentials are not sent to another address: fix c2.url"
    )
    assert redirected.value.status == status
    no_secret_in(redirected.value, DEMO_C2_PASSWORD)


def test_a_redirected_c2_call_sends_the_token_nowhere(serve: Callable[[Answer], Server]) -> None:
    recorder = serve(ok)
    redirector = serve(redirect_to(recorder, 302, except_login=True))
    client = C2Client(redirector.url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)

    with client, pytest.raises(ApiError) as redirected:
        client.list_cmdbs()

    assert recorder.received == []
    assert [(r.method, r.path) for r in redirector.received] == [
        ("POST", "/api/v1/auth/login"), ("GET", "/api/v1/cmdbs")]
    assert redirector.received[1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert str(redirected.value) == (
        f"C2 ITSM answered GET /api/v1/cmdbs with a redirect to {recorder.host}; "
        "credentials are not sent to another address: fix c2.url"
    )
    no_secret_in(redirected.value, DEMO_C2_PASSWORD, TOKEN)


@pytest.mark.parametrize("status", [301, 308])
def test_a_redirected_hector_call_sends_the_api_key_nowhere(
    serve: Callable[[Answer], Server], status: int
) -> None:
    recorder = serve(ok)
    redirector = serve(redirect_to(recorder, status))
    client = HectorClient(redirector.url, DEMO_HECTOR_API_KEY, retry=FAST)

    with client, pytest.raises(UnexpectedAnswer) as redirected:
        client.create_subcategory({"category_id": 12, "maker": "HP", "model": "M404", "description": "Laser"})

    assert recorder.received == []
    assert [(r.method, r.path) for r in redirector.received] == [("POST", "/api/v1/subcategories")]
    assert str(redirected.value) == (
        f"Hector answered POST /api/v1/subcategories with a redirect to {recorder.host}; "
        "credentials are not sent to another address: fix hector.url"
    )
    no_secret_in(redirected.value, DEMO_HECTOR_API_KEY)


def test_a_redirect_within_the_same_host_is_not_followed_either(serve: Callable[[Answer], Server]) -> None:
    """requests keeps the Authorization header on a redirect to the same host: still not followed."""
    redirector = serve(redirect_to(None, 307))
    client = HectorClient(redirector.url, DEMO_HECTOR_API_KEY, retry=FAST)

    with client, pytest.raises(UnexpectedAnswer, match=f"with a redirect to {redirector.host};"):
        client.list_stockrooms()

    assert [r.path for r in redirector.received] == ["/api/v1/stockrooms?limit=1000&offset=0"]


def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(serve: Callable[[Answer], Server]) -> None:
    """A C2 token is sent back as `Authorization: Bearer <token>`; one with a line break would be
    refused by requests in an error quoting that header, so it is refused first, unquoted."""
    evil = "c2-token-with-a-line-break-77a0\r\nX-Evil: 1"

    def login_answers_evil(method: str, path: str, server: Server) -> tuple[int, dict[str, str], Any]:
        return (200, {}, {"token": evil, "expires_in": 60}) if path.endswith("/auth/login") else ok(method, path, server)

    server = serve(login_answers_evil)
    client = C2Client(server.url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)
    with client, pytest.raises(UnexpectedAnswer) as refused:
        client.list_cmdbs()
    assert str(refused.value) == (
        "C2 ITSM gave an answer hector_sync did not expect (POST /api/v1/auth/login): "
        "the token is not a valid HTTP header value (empty, or a control character in it)"
    )
    assert [r.path for r in server.received] == ["/api/v1/auth/login"]
    no_secret_in(refused.value, "c2-token-with-a-line-break-77a0", "X-Evil", DEMO_C2_PASSWORD)
