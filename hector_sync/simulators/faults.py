"""Fault switches, call statistics and the admin endpoints, shared by both simulators.

Faults are set at runtime with `PUT /_sim/faults` (the body replaces every switch; an empty
object switches everything off) and read with `GET /_sim/faults`. They apply to API calls
only: never to `/_sim/*`, which is not counted in the statistics either. All randomness comes
from one `random.Random`, re-seeded on every PUT, so a run is reproducible call for call.

Listing faults break the paging of a list without touching its data or its announced total
(`total_count` in C2 ITSM, `total` in Hector): they apply to C2 ITSM's CI list and to Hector's
subcategory and asset lists (`listing_lists` narrows Hector's to one). A page is the window of
`page_size` (C2 ITSM) or `limit` items (Hector) at its position; Hector counts a window as page
k when its `offset` is (k-1) * `limit`.
- `listing_short: N`: the list ends N items early: the pages that would hold its last N items
  are missing (C2 ITSM's `next_page` is null sooner, Hector's windows come back empty), while
  the total still counts them.
- `listing_skip_page: k`: page k answers the items of page k+1 (page k+1 still answers its own,
  so a client sees page k's items never, and page k+1's twice).
- `listing_repeat_page: k` (k >= 2): page k answers the items of page k-1 again.
- `listing_endless: true`: past its last page the list never ends: C2 ITSM's last page names a
  `next_page`, and so does every later one; any page past the end answers the last page's items
  again (Hector too, for a client that asks past `total`).

Gateway faults after the fact hit a create (a POST; C2 ITSM's login is spared) once the
simulator has processed it, as a gateway timing out on a slow backend does: the item is stored,
the client never learns it.
- `store_then_fail_rate: r`: that share of creates is processed, and the answer of each that
  succeeded (2xx) is thrown away and replaced by one of `store_then_fail_with`, drawn at random:
  502 or 504 (an error body of code `bad_gateway` / `gateway_timeout`), or "drop" (the
  connection closed without a byte of answer). A create the simulator refuses (4xx) keeps its
  answer. Its status in the statistics is what the client got ("502", "504", "dropped"). The
  other call faults (down, rate limit, 429, 503, drop, cut) come first: a call they fail is
  never processed. Its own die is cast only while the rate is above 0, so it leaves the dice
  of the other switches as they were.
- `store_then_fail_late_s: s` (default 0): above 0, those creates are answered at once and
  processed `s` seconds later, as by a backend still working when its gateway gave up: a client
  that looks for the item right after the 502/504 finds nothing yet, a later read finds it.
  Each is then processed whatever its outcome, which nobody sees.
- `drop_connection_rate`, by contrast, closes the connection before the simulator processes the
  call (nothing stored), and `cut_body_rate` after it, in the middle of the answer's body.

Answer faults rewrite what a call let through answers, as a broken server or proxy would:
- `pad_answer_bytes: n`: a successful GET answer is padded with trailing spaces (the same JSON)
  to at least n bytes: a huge answer, without building a huge page.
- `chunked_answers: true`: answers go in chunks without a Content-Length, so a client learns
  their size only by reading them.
- `latin1_items: [id, ...]`: the strings of the items with these ids (as text: "ci-10000042",
  "1234") are sent in Latin-1 instead of UTF-8, as a legacy backend does (`wire.with_latin1_items`).
"""

import asyncio
import math
import random
import time
from collections import Counter
from typing import Any, Generic, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .wire import SimError, invalid, json_response, read_object, validation_details, with_latin1_items

ADMIN_PREFIX = "/_sim"
ANSWER_CHUNK_BYTES = 2**20  # the pieces of a chunked answer


class Faults(BaseModel):
    """Switches both simulators understand."""

    model_config = ConfigDict(extra="forbid")

    rate_limit_per_s: float | None = Field(None, gt=0, description="token bucket; over it → 429")
    latency_s: float = Field(0.0, ge=0, le=60, description="delay added to affected calls")
    latency_fraction: float = Field(1.0, ge=0, le=1, description="share of calls delayed")
    fail_429_rate: float = Field(0.0, ge=0, le=1, description="share answered 429")
    fail_503_rate: float = Field(0.0, ge=0, le=1, description="share answered 503")
    drop_connection_rate: float = Field(0.0, ge=0, le=1,
                                        description="share closed without any answer")
    cut_body_rate: float = Field(0.0, ge=0, le=1,
                                 description="share closed after the headers and half the body")
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After of random 429s")
    down: bool = Field(False, description="every call answers 503")
    seed: int | None = Field(None, description="seed of the fault dice; default: the data seed")
    listing_short: int = Field(0, ge=0, description="a list ends this many items early; its total "
                               "still counts them")
    listing_skip_page: int | None = Field(None, ge=1, description="page k answers page k+1's items")
    listing_repeat_page: int | None = Field(None, ge=2, description="page k answers page k-1's items")
    listing_endless: bool = Field(False, description="past the last page, a list keeps answering "
                                  "a non-empty page and a next one")
    store_then_fail_rate: float = Field(0.0, ge=0, le=1, description="share of creates (POSTs but C2's "
                                        "login) processed, then answered with a gateway error instead")
    store_then_fail_with: list[Literal[502, 504, "drop"]] = Field(
        default_factory=lambda: [502, 504], min_length=1,
        description="what those POSTs get instead of their answer, drawn at random: 502, 504, or "
        "drop (the connection closed without any answer)")
    store_then_fail_late_s: float = Field(0.0, ge=0, le=60, description="above 0: those POSTs are "
                                          "answered at once and processed this many seconds later")
    pad_answer_bytes: int = Field(0, ge=0, le=2**30, description="a successful GET answer is padded "
                                  "with trailing spaces to at least this many bytes")
    chunked_answers: bool = Field(False, description="answers are sent in chunks, without a Content-Length")
    latin1_items: list[str] = Field(default_factory=list, description="ids of items whose strings are "
                                    "sent in Latin-1 instead of UTF-8")

    @property
    def rewrites_answers(self) -> bool:
        return bool(self.pad_answer_bytes or self.chunked_answers or self.latin1_items)

    @property
    def listing_faulty(self) -> bool:
        return bool(self.listing_short or self.listing_skip_page or self.listing_repeat_page
                    or self.listing_endless)

    def listing_window(self, total: int, offset: int, limit: int) -> tuple[int, int, bool]:
        """The items [start, stop) of a list of `total` that the page at `offset` answers, and
        whether another page follows (C2 ITSM's `next_page`), after the listing switches."""
        served = max(0, total - self.listing_short)
        start = offset
        if offset % limit == 0:
            page = offset // limit + 1
            if page == self.listing_skip_page:
                start += limit
            elif page == self.listing_repeat_page:
                start -= limit
        if self.listing_endless and start >= served > 0:
            start = (served - 1) // limit * limit  # the last page, again
        more = self.listing_endless or offset + limit < served
        return start, max(start, min(start + limit, served)), more


class C2Faults(Faults):
    token_expire_every: int | None = Field(None, ge=1,
                                           description="a token dies after serving N calls")
    token_ttl_s: int = Field(3600, ge=1, description="lifetime of new tokens (expires_in)")
    empty_categories: list[str] = Field(
        default_factory=list, description="category ids listed as holding no CI at all, as a "
        "C2 ITSM whose account lost sight of them answers")


class HectorFaults(Faults):
    revoked: bool = Field(False, description="every API key is answered 401")
    listing_lists: list[Literal["subcategories", "assets"]] = Field(
        default_factory=lambda: ["subcategories", "assets"],
        description="the lists the listing_* switches apply to")


F = TypeVar("F", bound=Faults)


class Stats:
    """Calls per method, per "METHOD /route/{template}" and per status ("dropped" when the
    connection was closed without an answer, "cut" when it was closed in the middle of one), and
    the busiest second: what a server's rate limit sees of every client together."""

    def __init__(self) -> None:
        self.by_method: Counter[str] = Counter()
        self.by_route: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_second: Counter[int] = Counter()  # calls arrived in each whole second of the clock

    def record(self, method: str, template: str, status: str, arrived: float) -> None:
        self.by_method[method] += 1
        self.by_route[f"{method} {template}"] += 1
        self.by_status[status] += 1
        self.by_second[int(arrived)] += 1

    def as_json(self) -> dict[str, Any]:
        return {"calls": sum(self.by_method.values()), "by_method": dict(self.by_method),
                "by_route": dict(self.by_route), "by_status": dict(self.by_status),
                "peak_calls_per_s": max(self.by_second.values(), default=0)}


class Dropped:
    """The verdict "close the connection without answering"."""


DROP = Dropped()


class Cut:
    """The verdict "answer, but close the connection in the middle of the body"."""


CUT = Cut()


class SimControl(Generic[F]):
    """The runtime switches of one simulator, the dice behind them, and its statistics."""

    def __init__(self, faults: F, data_seed: int) -> None:
        self.data_seed = data_seed
        self.stats = Stats()
        self.set_faults(faults)

    def set_faults(self, faults: F) -> None:
        self.faults = faults
        self.rng = random.Random(self.data_seed if faults.seed is None else faults.seed)
        self._tokens = faults.rate_limit_per_s or 0.0
        self._refilled = time.monotonic()

    def _take_token(self) -> float | None:
        """None when the call may go; else how long until the bucket holds one token."""
        rate = self.faults.rate_limit_per_s
        if rate is None:
            return None
        now = time.monotonic()
        self._tokens = min(max(rate, 1.0), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / rate

    async def injected(self) -> SimError | Dropped | Cut | None:
        """Apply latency and decide whether this call fails, and how; None lets it through."""
        f = self.faults
        if f.down:
            return SimError(503, "unavailable", "the simulator is switched down")
        wait = self._take_token()
        if wait is not None:
            return SimError(429, "rate_limited", f"over {f.rate_limit_per_s} calls per second",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
        delayed = self.rng.random() < f.latency_fraction
        dice = self.rng.random()
        if delayed and f.latency_s:
            await asyncio.sleep(f.latency_s)
        # one die, cut into consecutive shares, so the rates add up rather than overlap
        if dice < f.drop_connection_rate:
            return DROP
        if dice < f.drop_connection_rate + f.fail_429_rate:
            return SimError(429, "rate_limited", "injected rate limit",
                            headers={"Retry-After": str(f.retry_after_s)})
        if dice < f.drop_connection_rate + f.fail_429_rate + f.fail_503_rate:
            return SimError(503, "unavailable", "injected outage")
        if dice < f.drop_connection_rate + f.fail_429_rate + f.fail_503_rate + f.cut_body_rate:
            return CUT
        return None

    def fails_after_store(self, method: str, path: str) -> int | str | None:
        """For a call let through: what replaces its answer once processed (`store_then_fail`:
        502, 504 or "drop"), or None to answer it normally."""
        f = self.faults
        if not f.store_then_fail_rate or method != "POST" or path.endswith("/auth/login"):
            return None
        if self.rng.random() >= f.store_then_fail_rate:
            return None
        return self.rng.choice(f.store_then_fail_with)


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The route a request addresses ("/api/v1/cis/{ci}"), for statistics per endpoint."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", scope["path"]))
    return "(no route)"


async def _drop(receive: Receive) -> None:
    """Close the TCP connection without a byte of answer, as a crashed proxy would.

    uvicorn answers 500 when an app raises before responding, so the only way to drop is to
    close its transport (reachable from the `receive` callable it hands us) and wait for the
    disconnect, after which uvicorn sends nothing.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("drop_connection needs the app to be served by uvicorn")
    transport.close()
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answer(app: ASGIApp, scope: Scope, receive: Receive) -> list[Message]:
    """The messages of the app's answer to the call, kept instead of sent."""
    messages: list[Message] = []

    async def keep(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, keep)
    return messages


async def _cut_body(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Let the app answer, send its status and headers (Content-Length of the whole body) and
    the first half of the body, then close: the break a client only sees while reading the
    body, after its HTTP library's retry loop. The app has processed the request by then.
    """
    start, *parts = await _answer(app, scope, receive)
    body = b"".join(part.get("body", b"") for part in parts)
    await send(start)
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    await _drop(receive)


_GATEWAY_CODES = {502: "bad_gateway", 504: "gateway_timeout"}
_LATE: set["asyncio.Task[None]"] = set()  # calls still to be processed after their answer


async def _process_later(app: ASGIApp, scope: Scope, receive: Receive, late_s: float) -> None:
    """Read the call's body now, and have the app process it `late_s` seconds from now, its
    answer going nowhere."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def nowhere(_: Message) -> None:
        pass

    async def later() -> None:
        await asyncio.sleep(late_s)
        await app(scope, replay, nowhere)

    task = asyncio.create_task(later())
    _LATE.add(task)
    task.add_done_callback(_LATE.discard)


async def _store_then_fail(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                           instead: int | str, late_s: float) -> str:
    """Let the app process the call (now, or `late_s` seconds after the answer), then, if it
    succeeded, answer `instead` of its answer: a gateway's 502/504 or a dropped connection.
    Returns the status the client got."""
    if late_s:
        await _process_later(app, scope, receive, late_s)
    else:
        messages = await _answer(app, scope, receive)
        start = messages[0]
        if not 200 <= start["status"] < 300:  # refused: nothing stored, its own answer goes out
            for message in messages:
                await send(message)
            return str(start["status"])
    if instead == "drop":
        await _drop(receive)
        return "dropped"
    status = int(instead)
    error = SimError(status, _GATEWAY_CODES.get(status, "gateway_error"),
                     "injected: the gateway gave up after the backend had processed the call")
    await error.response()(scope, receive, send)
    return str(status)


async def _rewritten(app: ASGIApp, scope: Scope, receive: Receive, send: Send, faults: Faults) -> str:
    """Let the app answer, then send that answer as the answer faults make it (module docstring).
    Returns its status."""
    start, *parts = await _answer(app, scope, receive)
    body = b"".join(part.get("body", b"") for part in parts)
    if 200 <= start["status"] < 300:
        if faults.latin1_items:
            body = with_latin1_items(body, set(faults.latin1_items))
        if scope["method"] == "GET" and len(body) < faults.pad_answer_bytes:
            body += b" " * (faults.pad_answer_bytes - len(body))
    headers = [(name, value) for name, value in start["headers"] if name.lower() != b"content-length"]
    if not faults.chunked_answers:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    step = ANSWER_CHUNK_BYTES if faults.chunked_answers else max(1, len(body))
    for at in range(0, len(body), step):
        await send({"type": "http.response.body", "body": body[at:at + step], "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return str(start["status"])


class SimMiddleware(Generic[F]):
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): faults in, statistics out."""

    def __init__(self, app: ASGIApp, control: SimControl[F], routes: list[BaseRoute]) -> None:
        self.app, self.control, self.routes = app, control, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        status = "dropped"
        arrived = time.time()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            fault = await self.control.injected()
            if isinstance(fault, Dropped):
                await _drop(receive)
            elif isinstance(fault, Cut):
                status = "cut"
                await _cut_body(self.app, scope, receive, send)
            elif fault is not None:
                await fault.response()(scope, receive, send_and_note)
            elif (instead := self.control.fails_after_store(scope["method"], scope["path"])) is not None:
                status = await _store_then_fail(self.app, scope, receive, send, instead,
                                                self.control.faults.store_then_fail_late_s)
            elif self.control.faults.rewrites_answers:
                status = await _rewritten(self.app, scope, receive, send, self.control.faults)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            self.control.stats.record(scope["method"], route_template(self.routes, scope), status, arrived)


def install_sim(app: FastAPI, control: SimControl[F]) -> None:
    """Add the fault/statistics middleware and the `/_sim` admin endpoints (no auth).

    Routes must be declared on the app itself (not through include_router): statistics name
    a call by matching it against `app.router.routes`.
    """
    app.add_middleware(SimMiddleware, control=control, routes=app.router.routes)
    model = type(control.faults)

    @app.get(ADMIN_PREFIX + "/faults")
    async def get_faults() -> Response:
        return json_response(control.faults.model_dump())

    @app.put(ADMIN_PREFIX + "/faults")
    async def put_faults(request: Request) -> Response:
        try:
            control.set_faults(model.model_validate(await read_object(request)))
        except ValidationError as exc:
            raise invalid(validation_details(exc)) from None
        return json_response(control.faults.model_dump())

    @app.get(ADMIN_PREFIX + "/stats")
    async def get_stats() -> Response:
        return json_response(control.stats.as_json())

    @app.post(ADMIN_PREFIX + "/stats/reset")
    async def reset_stats() -> Response:
        control.stats = Stats()
        return json_response(control.stats.as_json())

