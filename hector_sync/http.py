"""The HTTP machinery the C2 ITSM and Hector clients share.

One requests Session per client, with a urllib3 Retry that retries exactly what both contracts
call transient, a `Throttle` that paces all of a client's threads (its own rate limit, and the
Retry-After a server asks for), and a small JSON API base (`JsonApi`) that turns every answer
that is not a success into a typed error from `hector_sync.errors`. Secrets (passwords, tokens, API keys)
travel only in request bodies and headers, which neither we nor urllib3/requests ever log, and
are scrubbed from any text a server sends back before it reaches an exception. They stay with
their host: a redirect is never followed (every call carries a password, a token or a key), and
no exception of requests/urllib3 is chained to ours, since its text can quote a header.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import requests
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from hector_sync.errors import (
    ApiError,
    BadRequest,
    CredentialsRejected,
    Duplicate,
    FieldProblem,
    InvalidData,
    NotFound,
    NotUtf8,
    PermissionMissing,
    System,
    Unavailable,
    UnexpectedAnswer,
    VersionConflict,
)
from hector_sync import textsafe

if TYPE_CHECKING:
    from hector_sync.config import SyncConfig

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Redirected(UnexpectedAnswer):
    """A 3xx answer, not followed: every call carries a credential (the C2 login its password,
    the others a token or the API key), and a followed 307/308 would resend it, body and all, to
    whatever address the Location names. `target` is that address's host[:port]; `setting` the
    configuration key that holds the url ("c2.url")."""

    target: str = ""
    setting: str = ""

    def __str__(self) -> str:
        return (
            f"{self.system} answered {self.call} with a redirect to {self.target}; "
            f"credentials are not sent to another address: fix {self.setting}"
        )

API_PREFIX = "/api/v1"
POOL_SIZE = 16
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Methods replayed after the connection dropped once the request was sent: GET reads nothing
# twice that matters, and every PATCH we send carries If-Match, so a replay of a PATCH that was
# in fact applied answers 409 version_conflict instead of applying it twice. POST is never
# replayed: a C2 CI would be created twice (the caller decides; Hector answers 409 duplicate).
REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "PATCH"})
# The Retry a replay after a cut body goes on from, set around its send (per thread): requests
# takes no Retry per request, so `BudgetAdapter` hands this one to urllib3 instead.
_SPENT: ContextVar[Retry | None] = ContextVar("hector_sync_spent_retry", default=None)
# The largest burst a client's rate limit lets through after a pause, in seconds' worth of calls:
# a tenth of a second makes up for threads waking late, yet stays far below the one second's
# worth a server's token bucket commonly holds.
BURST_S = 0.1
# The largest answer read: the contracts' largest page (500 CIs, or 1,000 Hector rows) is a few
# hundred kB, and 64 kB a row stays below it, while a proxy's or a broken server's endless body
# cannot eat the run's memory. Over it, an answer is refused, by its Content-Length unread.
MAX_ANSWER_BYTES = 64 * 2**20
# How much of a body is read at a time, and so how far past the cap a read may go.
READ_CHUNK_BYTES = 2**18

ModelT = TypeVar("ModelT", bound=BaseModel)
OnTotal = Callable[[int, int], None]  # (items, pages) of a whole paged list, as its answer counts it


def pages_of(total: int, page_size: int) -> int:
    """How many pages a list of `total` items makes."""
    return -(-total // page_size)


@dataclass(eq=False)
class ListingIncomplete(UnexpectedAnswer):
    """A paged list that did not account for what it announced (see `Listing`): it ended
    early, skipped or repeated a page, would not end, or outlasted `max_read_time`.

    `problem` and `detail` say what, in words; `category` is named by the snapshot reader that
    refused its read on this account (None for the clients' other lists).
    """

    problem: str = ""
    detail: str = ""
    category: str | None = None

    def __str__(self) -> str:
        where = f"{self.call}: {self.detail}" if self.detail else self.call
        if self.category is None:
            return f"{self.system} {self.problem} ({where})"
        return (f"{self.system} {self.problem} for category {self.category} ({where}); "
                "the snapshot is refused and the last good one kept")


def _span(seconds: float) -> str:
    """A duration as the configuration writes it: 2h, 90m, 2s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Deadline:
    """When a read must be over: `seconds` (its `max_read_time`) after it began. One deadline
    may span several lists (Hector's subcategories, then its assets)."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def after(cls, limit: timedelta) -> Deadline:
        return cls(limit.total_seconds())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def passed(self) -> bool:
        return self.elapsed() > self.seconds

    def __str__(self) -> str:
        return f"max_read_time ({_span(self.seconds)})"


class Listing:
    """The tally of one paged list, which must account for every item it announced and for its
    pages, or its read is refused: the one check behind C2 ITSM's and Hector's paginators.

    A paginator calls `before_page()` before each call, `page()` on each answer (it returns the
    items to hand on) and `end()` once the server says the list is over; each raises
    `ListingIncomplete` naming what went wrong:
    - ended early: fewer distinct items than the last announced total (`total_count`, `total`);
    - endless: a page with items at or past the announced total, or more than one (empty) page
      there: the one empty page a server may answer after the last full one is the only margin;
    - skipped or repeated a page: ids received before come again (a skipped page shows the
      same way, as the server's next page then repeats what it sent in its place), or more items
      than the announced total;
    - slow: `deadline` passed before the list was over (checked between pages, so the bound is
      `max_read_time` plus the call in flight, itself bounded by the retry policy's timeouts).

    How strict, when a list changes while it is paged (both APIs order by id and page by
    position): items created meanwhile come last, are received, and raise the total, so they
    balance out. An item that joins a filtered list behind the cursor (a CI modified during an
    incremental read, an asset moved into the category) is not received, and shifts every later
    item one place: the next page begins with the item that ended the page before. That, and
    only that, is forgiven, and only as often as the announced total has grown since the first
    page: each forgiven repeat stands for one joined item, which is then counted as accounted
    for. The joined item changed after the read began, so the next read lists it; nothing is
    missed. Any other repeated id is a fault, as is any shortfall the growth does not explain.
    The count cannot see an item that leaves the list behind the cursor (an asset moved out of
    the category): the next one is then skipped while the total drops by one. The APIs give no
    way to tell; the retire guard (max_change_fraction) is the safety net for that race.

    The ids received are kept (tens of MB for a million) to recognise a repeat anywhere.
    """

    def __init__(
        self,
        system: System,
        call: str,
        noun: str,
        page_size: int,
        *,
        total_name: str,
        account: str | None = None,
        deadline: Deadline | None = None,
        on_total: OnTotal | None = None,
    ) -> None:
        self.system, self.call, self.noun, self.page_size = system, call, noun, page_size
        self.total_name, self.account, self.deadline, self.on_total = total_name, account, deadline, on_total
        self.first_total: int | None = None
        self.total: int | None = None
        self.pages = 0
        self.past_end = 0  # pages answered at or past the announced total
        self.joined = 0  # repeats forgiven as the mark of an item that joined behind the cursor
        self._seen: set[object] = set()
        self._previous: list[object] = []  # the ids of the page before, in order

    @property
    def received(self) -> int:
        """Distinct items received so far."""
        return len(self._seen)

    def fault(self, problem: str, detail: str = "") -> ListingIncomplete:
        return ListingIncomplete(system=self.system, call=self.call, account=self.account,
                                 problem=problem, detail=detail)

    def before_page(self) -> None:
        """Abandon the read if its deadline has passed (before each call of a page)."""
        if self.deadline is None or not self.deadline.passed():
            return
        got = f"{self.received:,} of the {self.total:,}" if self.total is not None else "none of the"
        raise self.fault(
            f"did not finish listing its {self.noun} within {self.deadline}",
            f"the read was abandoned after {self.deadline.elapsed():.0f} s, before page {self.pages + 1}, "
            f"with {got} announced received",
        )

    def page(self, start: int, items: list[dict[str, Any]], total: int | None) -> list[dict[str, Any]]:
        """Account for one answer, whose first item is at position `start` of the list; return
        its items that were not received before."""
        number = self.pages + 1
        if total is None:
            raise self.fault(f"listed {self.noun} without announcing how many",
                             f"page {number} has no {self.total_name}")
        if self.on_total is not None:
            self.on_total(total, pages_of(total, self.page_size))
        if self.first_total is None:
            self.first_total = total
        self.total, self.pages = total, number
        if len(items) > self.page_size:
            raise self.fault(f"listed {len(items):,} {self.noun} on one page",
                             f"page {number} asked for {self.page_size:,}")
        if start >= total:  # past the announced end: one empty page is the margin, nothing more
            self.past_end += 1
            if items or self.past_end > 1:
                what = f"still held {len(items):,} {self.noun}" if items else "came after an empty one"
                raise self.fault(
                    f"kept listing {self.noun} past the {total:,} it announced",
                    f"page {number} {what}, beyond the {pages_of(total, self.page_size):,} pages its "
                    f"{self.total_name} makes: the listing does not end",
                )
        ids = [item.get("id") if isinstance(item, dict) else None for item in items]
        on_page: set[object] = set()
        repeats = 0
        for item_id in ids:
            if item_id in self._seen or item_id in on_page:
                repeats += 1
            else:
                on_page.add(item_id)
        fresh = items
        if repeats:
            # forgiven only as the mark of items that joined behind the cursor (class docstring)
            shifted = ids[:repeats] == self._previous[-repeats:]
            if not shifted or self.joined + repeats > total - self.first_total:
                raise self.fault(
                    f"listed {repeats:,} {self.noun} twice",
                    f"page {number} answered {self.noun} of an earlier page: the listing skips or repeats pages",
                )
            self.joined += repeats
            fresh = items[repeats:]
        self._seen.update(on_page)
        self._previous = ids
        return fresh

    def end(self) -> None:
        """The server says the list is over: every item it announced must have come."""
        total = self.total or 0
        accounted = self.received + self.joined
        joined = f", {self.joined:,} of which joined it behind the cursor" if self.joined else ""
        if accounted < total:
            raise self.fault(
                f"listed {self.received:,} of the {total:,} {self.noun} it announced{joined}",
                f"the listing ended after {self.pages:,} page{'s' * (self.pages != 1)}, where its "
                f"{self.total_name} makes {pages_of(total, self.page_size):,}",
            )
        if accounted > total:
            raise self.fault(
                f"listed {self.received:,} {self.noun}, more than the {total:,} it announced",
                "the listing repeats or invents items",
            )


class Throttle:
    """When a client may send its next request; one per client, shared by all its threads.

    Two rules, both blocking the caller until it may go:
    - at most `rate_per_s` calls per second (None: no limit), spaced evenly, as a token bucket
      holding BURST_S worth of calls (GCRA): a server's own limit counts every thread's calls,
      so 8 writers together stay under it instead of each discovering it by a 429;
    - nothing before the end of a `hold`: a server answering 429 with Retry-After means "this
      client, not just this call", so every thread waits it out instead of hammering on.

    A server's limit also counts the calls of every other run: the schedule's runs of other
    categories, an operator's rematerialization, `hector-sync sync` from cron. With a `ledger`
    (a file; see `budget_file`) the schedule lives there, under a file lock, in wall-clock time,
    so every process that names the same file draws on one budget and sees every hold.

    Every attempt passes here exactly once: the first in `JsonApi._send`, each retry (urllib3's
    and a replay after a cut body) in `TransientRetry.sleep`, which runs between two attempts.
    """

    def __init__(self, rate_per_s: float | None = None, ledger: Path | None = None) -> None:
        if rate_per_s is not None and not rate_per_s > 0:
            raise ValueError(f"a rate limit must be above 0 calls per second, not {rate_per_s}")
        self.rate_per_s = rate_per_s
        self._interval = 1 / rate_per_s if rate_per_s else 0.0
        self._burst_s = max(0.0, BURST_S - self._interval)  # how far ahead of schedule a call may go
        self._ledger = ledger
        self._ledger_lock = FileLock(f"{ledger}.lock") if ledger else None
        self._clock = time.time if ledger else time.monotonic  # processes share no monotonic clock
        self._local = _Schedule()
        self._lock = threading.Lock()

    @contextmanager
    def _schedule(self) -> Iterator[_Schedule]:
        """The schedule to read and change, this process's alone or the ledger's, held exclusively."""
        with self._lock:
            if self._ledger is None or self._ledger_lock is None:
                yield self._local
                return
            with self._ledger_lock:
                schedule = _Schedule.load(self._ledger)
                yield schedule
                schedule.save(self._ledger)

    def wait(self) -> None:
        """Block until this thread may send, and count its call."""
        while True:
            with self._schedule() as schedule:
                now = self._clock()
                go = max(schedule.not_before, schedule.due - self._burst_s)
                if now >= go:
                    schedule.due = max(schedule.due, now) + self._interval
                    return
            time.sleep(go - now)  # then re-checked: a hold may have come meanwhile

    def hold(self, seconds: float) -> None:
        """No thread sends for `seconds` from now (a later hold already set stays)."""
        with self._schedule() as schedule:
            schedule.not_before = max(schedule.not_before, self._clock() + seconds)

    def __repr__(self) -> str:
        shared = f", ledger={str(self._ledger)!r}" if self._ledger else ""
        return f"Throttle(rate_per_s={self.rate_per_s}{shared})"


@dataclass
class _Schedule:
    """When the next call is due on the even schedule (the bucket is full below it), and the end
    of the latest Retry-After; stored as two doubles in a ledger file."""

    due: float = 0.0
    not_before: float = 0.0

    @classmethod
    def load(cls, path: Path) -> _Schedule:
        try:
            return cls(*struct.unpack("<dd", path.read_bytes()))
        except (FileNotFoundError, struct.error):  # a first call, or a ledger cut by a crash: start afresh
            return cls()

    def save(self, path: Path) -> None:
        path.write_bytes(struct.pack("<dd", self.due, self.not_before))


def budget_file(beside: Path, section: str, host: str) -> Path:
    """The ledger of one server's call budget, beside the DuckDB file every run of the deployment
    already shares: `state.duckdb.c2-api.example.com-443.budget`."""
    return beside.with_name(f"{beside.name}.{section}-{re.sub(r'[^A-Za-z0-9.-]', '-', host)}.budget")


class RetryPolicy(BaseModel):
    """How hard to insist on transient faults, and how long to wait for a server (seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # 12 retries ride out even a third of calls failing (0.35^13: about one call in a million
    # gives up), while backoff capped at 4 s bounds one call on a dead system to ~40 s.
    total: int = Field(12, ge=0)
    backoff_factor: float = Field(0.5, ge=0)
    backoff_max: float = Field(4, ge=0)
    retry_after_max: float = Field(60, ge=0)
    connect_timeout: float = Field(5, gt=0)
    read_timeout: float = Field(60, gt=0)
    # Once a call to a host has given up, every call to it in this process fails at once for
    # this long: a system that is down costs one call's retries per run, not one per step.
    breaker_s: float = Field(60, ge=0)

    def build(self, throttle: Throttle | None = None) -> TransientRetry:
        """The urllib3 Retry that applies this policy, pacing its retries with `throttle`."""
        return TransientRetry(
            throttle=throttle,
            total=self.total,
            other=0,  # TLS and proxy failures are configuration problems, not transient ones
            status_forcelist=TRANSIENT_STATUSES,
            allowed_methods=REPLAYABLE_METHODS,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
            # annotated int in urllib3, but only compared and slept on, so a float works
            retry_after_max=self.retry_after_max,  # type: ignore[arg-type]
            respect_retry_after_header=True,
            raise_on_status=False,
        )

    @property
    def timeout(self) -> tuple[float, float]:
        """requests' (connect, read) pair: a dead host fails fast, a slow big page still arrives."""
        return (self.connect_timeout, self.read_timeout)


class TransientRetry(Retry):
    """A Retry for the contracts' transient faults.

    429, 502, 503 and 504 mean the request was not processed, so they are retried for every
    method (urllib3 would only retry its idempotent methods), honouring Retry-After. Connection
    errors are retried for every method too (nothing was sent); read errors, a body cut short
    included (see `JsonApi._send`), only for REPLAYABLE_METHODS (urllib3 checks `allowed_methods`).

    Its waits go through the client's `Throttle` (a fresh one when built without): a Retry-After
    becomes a hold for every thread of the client, and this call waits it out in the throttle
    once, with the others, not a second time in urllib3's own sleep.
    """

    def __init__(self, *args: Any, throttle: Throttle | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.throttle = throttle or Throttle()

    def new(self, **kwargs: Any) -> Self:
        # urllib3 makes a new Retry for every attempt; all of them pace through one throttle
        return super().new(**{"throttle": self.throttle, **kwargs})

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        return status_code in self.status_forcelist

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """Count the failed attempt; a Retry-After in its answer holds back the whole client,
        even when this was the last retry (urllib3 sleeps on none then, its caller still should)."""
        pause = self._retry_after(response)
        if pause:
            self.throttle.hold(pause)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Wait before the next attempt: the backoff unless the server gave a Retry-After (then
        `increment` made it a hold), then the throttle, which waits out any hold and the rate limit.

        So a 429 with Retry-After: 1 costs this call about 1 s (plus its turn under the rate
        limit), not 2 s; several 429s at once hold until the latest of their ends, not the sum.
        """
        if not self._retry_after(response):
            time.sleep(self.get_backoff_time())
        self.throttle.wait()

    def _retry_after(self, response: BaseHTTPResponse | None) -> float | None:
        """The answer's Retry-After in seconds, capped at retry_after_max; None when absent or
        unreadable (an unreadable one means backoff, where urllib3 would raise InvalidHeader)."""
        if response is None or not self.respect_retry_after_header:
            return None
        try:
            return self.get_retry_after(response)
        except InvalidHeader:
            return None


class BudgetAdapter(HTTPAdapter):
    """An HTTPAdapter whose Retry is the one a replay carries, if any, else the policy's: the
    retries a call made before its body was cut and those of its replay share one budget."""

    @property
    def max_retries(self) -> Retry:
        spent = _SPENT.get()
        return self._policy_retry if spent is None else spent

    @max_retries.setter
    def max_retries(self, retry: Retry) -> None:
        self._policy_retry = retry


class Breaker:
    """Whether the client's server stayed unavailable through a whole retry budget, and since when.

    One per client, and a client serves a whole run (and every category of one `hector-sync
    sync`): its other steps and categories then fail at once instead of retrying a dead server
    again, while a new run tries afresh.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: tuple[float, str] | None = None

    def trip(self, what: str) -> None:
        with self._lock:
            self._open = (time.monotonic(), what)

    def reset(self) -> None:
        with self._lock:
            self._open = None

    def opened(self, within_s: float) -> tuple[float, str] | None:
        """(seconds ago, what failed) while the server counts as down, else None."""
        with self._lock:
            tripped = self._open
        if tripped is None:
            return None
        ago = time.monotonic() - tripped[0]
        return (ago, tripped[1]) if ago < within_s else None


class CallStats:
    """Calls per HTTP method and transport retries of one client, for Dagster metadata."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.retries = 0

    def record(self, method: str, retries: int) -> None:
        with self._lock:
            self.calls[method] += 1
            self.retries += retries

    def as_metadata(self) -> dict[str, int]:
        """Flat counts: `calls`, `calls_GET`, `calls_POST`, ..., `retries`."""
        with self._lock:
            counts = {f"calls_{method}": n for method, n in sorted(self.calls.items())}
            return {"calls": sum(self.calls.values()), **counts, "retries": self.retries}

    @contextmanager
    def counting(self) -> Iterator[dict[str, int]]:
        """The counts of the calls made inside the block, filled in when it ends: one client
        serves every step of a run, and each step reports its own calls."""
        before = self.as_metadata()
        counts: dict[str, int] = {}
        try:
            yield counts
        finally:
            after = self.as_metadata()
            counts.update({k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0) or k in ("calls", "retries")})

    def __repr__(self) -> str:
        return f"CallStats({self.as_metadata()})"


def build_session(retry: RetryPolicy, verify_tls: bool, throttle: Throttle) -> requests.Session:
    """A Session whose adapter retries transient faults, paced by `throttle`, and pools up to
    POOL_SIZE connections."""
    session = requests.Session()
    adapter = BudgetAdapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=retry.build(throttle))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = verify_tls
    session.headers["Accept"] = "application/json"
    return session


def header_safe(value: str) -> bool:
    """Whether `value` can travel in an HTTP header as it is: not empty, no surrounding space, no
    control character (a line break would end the header and start another), Latin-1 only (how
    http.client encodes headers). requests refuses such a value with an error quoting it."""
    return (
        bool(value)
        and value == value.strip()
        and all(" " <= char <= "~" or "\xa0" <= char <= "\xff" for char in value)
    )


def call_name(method: str, path: str) -> str:
    """How errors and logs name a call: "GET /api/v1/cmdbs", never with the query string."""
    return f"{method} {API_PREFIX}{path}"


def utc_z(instant: datetime) -> str:
    """ISO 8601 UTC with `Z`, rounded down to the second so a `since` filter never misses a record."""
    if instant.tzinfo is None:
        raise ValueError("a timestamp for C2 ITSM or Hector must carry a timezone (naive given)")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def path_of(*segments: str | int) -> str:
    """Join ids into a URL path, quoting each so an id can never change the path's shape."""
    return "".join("/" + quote(str(s), safe="") for s in segments)


class JsonApi(ABC):
    """A JSON REST API at `{url}/api/v1`: sends, counts, decodes and maps errors to types.

    Subclasses set `system`, authenticate (a session header, or their own `_call`), name their
    secrets so that server text quoting one is scrubbed before it reaches an exception, and say
    where a rejected credential is configured. `rate_limit_per_s` caps the calls per second of
    all threads together (None: no cap); a Retry-After is honoured either way (`Throttle`).
    With a rate limit, `budget_beside` (the DuckDB file) makes the cap, and every Retry-After,
    hold for all the processes of the deployment together (`Throttle`, `budget_file`).
    """

    system: ClassVar[System]
    section: ClassVar[str]  # the configuration section of its settings ("c2"), for messages

    def __init__(
        self,
        url: str,
        *,
        verify_tls: bool,
        retry: RetryPolicy,
        account: str | None,
        rate_limit_per_s: float | None = None,
        budget_beside: Path | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the url is not repeated: a mistyped one may hold a pasted password
            raise ValueError(f"the {self.system} url must look like https://host[:port][/path]")
        if parts.username or parts.password:
            raise ValueError(f"the {self.system} url must not contain credentials; configure them apart")
        self.url = url.rstrip("/")
        self.host = parts.netloc
        self.account = account
        self.retry = retry
        self.verify_tls = verify_tls
        self.stats = CallStats()
        self.breaker = Breaker()
        budget = budget_file(budget_beside, self.section, self.host) if budget_beside and rate_limit_per_s else None
        self.throttle = Throttle(rate_limit_per_s, budget)
        self._replayable = retry.build(self.throttle).new(allowed_methods=REPLAYABLE_METHODS | {"POST"})
        # for a call whose every outcome must be known (a C2 ITSM create): only a 429, which says
        # "not processed", is retried; a 5xx may come after the server acted on the call
        self._once = retry.build(self.throttle).new(status_forcelist=frozenset({429}))
        self._session = build_session(retry, verify_tls, self.throttle)
        if not verify_tls:
            log.warning(
                "TLS certificate verification is OFF for %s at %s: anyone on the network path can "
                "impersonate the server and read the credentials. Use this only with a test server.",
                self.system,
                self.url,
            )
        if parts.scheme.lower() == "http":  # the configuration only allows it with allow_insecure_http
            log.warning(
                "Plain HTTP (no TLS) for %s at %s: the credentials cross the network unencrypted, "
                "readable by anyone on the path (allow_insecure_http: true). Use this only with a test server.",
                self.system,
                self.url,
            )

    @classmethod
    def for_sync(cls, config: SyncConfig) -> Self:
        """The client a sync runs on: its section of `config`, and its rate limit shared by every
        run through a budget beside the DuckDB file."""
        return cls.from_settings(getattr(config, cls.section), budget_beside=config.storage.duckdb_path)

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any, *, budget_beside: Path | None = None) -> Self:
        """Build from the system's section of the configuration."""

    def __repr__(self) -> str:
        user = f", user={self.account!r}" if self.account else ""
        return f"{type(self).__name__}(url={self.url!r}{user})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @abstractmethod
    def _secrets(self) -> Iterable[str]:
        """Every secret value this client holds, to scrub from what servers say."""

    def _redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "***")
        return text

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        replay: bool = False,
        once: bool = False,
    ) -> Any:
        """Send one call and return its decoded JSON, or raise the typed error of its answer.

        `replay`: the contract makes this POST safe to send again (a second one is answered 409
        duplicate), so a lost answer is retried like a GET's.
        `once`: this call must not be sent twice unless its answer says it was not processed: a
        429 is retried, a 5xx is raised at once (Unavailable with its status), and a lost answer
        or a timeout is never replayed (Unavailable without a status). A connection that could
        not be made is still retried: nothing was sent.
        """
        call = call_name(method, path)
        started = time.monotonic()
        down = self.breaker.opened(self.retry.breaker_s)
        if down is not None:
            raise self._error(Unavailable, call, reason=f"it stayed unavailable {down[0]:.0f} s ago ({down[1]}), "
                              f"so it is not called again for {self.retry.breaker_s:g} s")
        failed: tuple[int, str] | None = None
        try:
            response = self._send(
                method, self.url + API_PREFIX + path, replay=replay, once=once, params=params, json=body,
                headers=headers,
            )
        except (requests.RequestException, Urllib3Error) as exc:
            failed = self._failure(method, exc)
        except _TooLarge as big:  # an answer, but none to read: never asked for again
            self.stats.record(method, big.retries)
            raise self._error(UnexpectedAnswer, call, status=big.status, message=big.reason) from None
        if failed is not None:
            # Raised here, outside the handler, so that nothing chains the library's exception:
            # its text can quote a request header (requests' InvalidHeader holds "Bearer <key>").
            retries, reason = failed
            self.stats.record(method, retries)
            log.debug("%s %s failed after %d retries: %s", self.system, call, retries, reason)
            if retries >= self.retry.total:
                self.breaker.trip(f"{call}: {reason}")
            raise self._error(Unavailable, call, retries=retries, reason=reason)
        retries = len(getattr(response.raw.retries, "history", ()))
        self.stats.record(method, retries)
        if response.status_code in TRANSIENT_STATUSES and retries >= self.retry.total:
            self.breaker.trip(f"{call}: {response.status_code}")
        elif response.status_code < 500:
            self.breaker.reset()
        log.debug(
            "%s %s -> %d in %.3f s, %d retries",
            self.system, call, response.status_code, time.monotonic() - started, retries,
        )
        if 300 <= response.status_code < 400:
            raise self._redirect_error(response, call)
        if response.status_code >= 400:
            raise self._answer_error(response, call, retries)
        return self._decoded(response, call)

    def _send(self, method: str, url: str, *, replay: bool, once: bool = False, **kwargs: Any) -> requests.Response:
        """Send a call and read its whole body, unless it is over MAX_ANSWER_BYTES (`_TooLarge`).

        requests reads the body after urllib3's retry loop, so a connection cut in the middle of
        it is retried here, by urllib3's own Retry: REPLAYABLE_METHODS only, the same backoff,
        and one budget per call, the replay going on from the retries already spent.

        The throttle is passed here before the first attempt only: every later one, urllib3's
        retries and these replays alike, passes it in `TransientRetry.sleep`.
        """
        spent: Retry | None = self._once if once else self._replayable if replay else None
        self.throttle.wait()
        while True:
            carried = _SPENT.set(spent)
            try:
                # verify per request: a session's verify=False loses to REQUESTS_CA_BUNDLE (requests#3829);
                # no redirect is followed: it would carry the call's credentials elsewhere (`_redirect_error`)
                response = self._session.request(
                    method, url, stream=True, timeout=self.retry.timeout, verify=self.verify_tls,
                    allow_redirects=False, **kwargs
                )
            finally:
                _SPENT.reset(carried)
            try:
                _read_capped(response, MAX_ANSWER_BYTES)
                return response
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                response.close()
                # re-raises the cut for a POST, MaxRetryError once the budget is spent
                spent = response.raw.retries.increment(method, url, error=exc.args[0])
                spent.sleep()  # the backoff, then the throttle

    def _decoded(self, response: requests.Response, call: str) -> Any:
        """The answer's JSON, read as UTF-8, as JSON on the wire is (RFC 8259, and both contracts):
        never guessed nor patched with U+FFFD, which would reach the other system as data. Bytes
        that are not UTF-8, or a lone surrogate escaped as \\udcxx, raise `NotUtf8` naming the items."""
        body = response.content
        try:
            decoded, strict = body.decode("utf-8"), True
        except UnicodeDecodeError:
            decoded, strict = body.decode("utf-8", "surrogateescape"), False  # bad bytes → U+DC80–U+DCFF
        try:
            data = json.loads(decoded)
        except ValueError:
            raise self._error(
                UnexpectedAnswer, call, status=response.status_code, message="the body is not JSON"
            ) from None
        if not strict or _ESCAPED_SURROGATE.search(decoded):
            places = _not_utf8_places(data)
            if places:
                raise self._error(NotUtf8, call, status=response.status_code, items=places)
        return data

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated `_request` (overridden where authentication needs more than a header)."""
        return self._request(method, path, **kwargs)

    def _fetch(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        """An authenticated call whose answer must match `model`."""
        return self._parse(model, self._call(method, path, **kwargs), call_name(method, path))

    def _record(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """An authenticated call answering one record, returned as the server sent it once we
        know it carries what a later write needs (id, version)."""
        answer = self._call(method, path, **kwargs)
        self._parse(_Record, answer, call_name(method, path))
        return answer

    def _parse(self, model: type[ModelT], data: Any, call: str) -> ModelT:
        """Validate what we need from an answer; a breach of the contract is UnexpectedAnswer."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = [
                FieldProblem(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise self._error(UnexpectedAnswer, call, details=problems[:5]) from None

    def _error(self, kind: type[ApiError], call: str, **facts: Any) -> ApiError:
        return kind(system=self.system, call=call, account=self.account, **facts)

    def _answer_error(self, response: requests.Response, call: str, retries: int) -> ApiError:
        """Map an error status and its `{"error": {...}}` body to the typed error."""
        status = response.status_code
        envelope = _error_envelope(response)
        code = envelope.code
        facts: dict[str, Any] = {
            "status": status,
            "code": code,
            "message": self._redact(envelope.message or ""),
            "details": [
                FieldProblem(self._redact(d.field), self._redact(d.reason)) for d in envelope.details
            ],
        }
        if status == 401:
            return self._error(CredentialsRejected, call, **facts, hint=self._credentials_hint())
        if status == 403:
            return self._error(PermissionMissing, call, **facts)
        if status == 404:
            return self._error(NotFound, call, **facts)
        if status == 409 and code == "version_conflict":
            return self._error(VersionConflict, call, **facts)
        if status == 409 and code == "duplicate":
            return self._error(Duplicate, call, **facts, existing_id=envelope.existing_id)
        if status == 422:
            return self._error(InvalidData, call, **facts)
        if status in TRANSIENT_STATUSES or status >= 500:
            return self._error(Unavailable, call, **facts, retries=retries)
        return self._error(BadRequest, call, **facts)

    def _redirect_error(self, response: requests.Response, call: str) -> Redirected:
        """A redirect answer as an error naming where it pointed (host[:port] only: a Location
        may carry user:password@ or a query); the address to fix is our own url."""
        location = response.headers.get("Location")
        target = "an address it did not give (no Location)"
        if location:
            moved = urlsplit(urljoin(response.url or self.url, location))
            host = moved.hostname or "?"
            target = f"[{host}]" if ":" in host else host
            try:
                port = moved.port
            except ValueError:
                port = None
            if port is not None:
                target += f":{port}"
            if moved.scheme and moved.scheme.lower() != urlsplit(self.url).scheme.lower():
                target = f"{moved.scheme.lower()}://{target}"
        return Redirected(system=self.system, call=call, status=response.status_code, account=self.account,
                          target=target, setting=f"{self.section}.url")

    @abstractmethod
    def _credentials_hint(self) -> str:
        """Where the operator fixes rejected credentials, for the 401 message."""

    def _failure(self, method: str, exc: requests.RequestException | Urllib3Error) -> tuple[int, str]:
        """How many retries a request without an answer made, and why it failed, in words."""
        wrapped = exc.args[0] if exc.args else None
        cause: BaseException = wrapped if isinstance(wrapped, BaseException) else exc
        retries = 0
        if isinstance(cause, MaxRetryError):
            cause = cause.reason
            retries = 0 if isinstance(cause, Urllib3SSLError) else self.retry.total
        host = self.host
        if isinstance(cause, NameResolutionError):
            return retries, f"the name {host.rsplit(':', 1)[0]} does not resolve"
        if isinstance(cause, NewConnectionError):
            refused = isinstance(cause.__cause__, ConnectionRefusedError)
            return retries, f"{host} refused the connection" if refused else f"cannot connect to {host}"
        if isinstance(cause, ConnectTimeoutError):
            return retries, f"{host} did not accept a connection within {self.retry.connect_timeout:g} s"
        if isinstance(cause, Urllib3SSLError) or isinstance(exc, requests.exceptions.SSLError):
            return retries, f"the TLS handshake with {host} failed (is its certificate trusted?)"
        maybe_done = "" if method in REPLAYABLE_METHODS else "; the request may have been processed"
        if isinstance(cause, ReadTimeoutError) or isinstance(exc, requests.exceptions.ReadTimeout):
            return retries, f"{host} gave no answer within {self.retry.read_timeout:g} s{maybe_done}"
        if isinstance(exc, requests.exceptions.InvalidHeader):  # nothing was sent; its text quotes the header
            return 0, "a request header holds a character HTTP does not allow (a secret with a line break?)"
        if isinstance(cause, ProtocolError):  # before the answer, or in the middle of its body
            return retries, f"{host} dropped the connection{maybe_done}"
        return retries, f"the call to {host} failed: {type(cause).__name__}"


class _Record(BaseModel):
    id: int | str
    version: int


class _ProblemBody(BaseModel):
    field: str
    reason: str


class _ErrorBody(BaseModel):
    code: str | None = None
    message: str | None = None
    details: list[_ProblemBody] = []
    existing_id: int | str | None = None


def _error_envelope(response: requests.Response) -> _ErrorBody:
    """The `error` object of an error answer; an empty one when a proxy sent HTML or nothing."""
    try:
        return _ErrorBody.model_validate(response.json()["error"])
    except (ValueError, KeyError, TypeError, ValidationError):
        return _ErrorBody(message=response.reason or None)


class _TooLarge(Exception):
    """An answer over the size cap (`_read_capped`): `reason` says how it showed."""

    def __init__(self, response: requests.Response, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = response.status_code, reason
        self.retries = len(getattr(response.raw.retries, "history", ()))


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def _read_capped(response: requests.Response, cap: int) -> None:
    """Read the answer's body into `response.content`, unless it is over `cap` bytes: then
    `_TooLarge`, by its Content-Length before a byte is read, else as soon as what came passes
    the cap (a chunked body announces no length). A body cut short raises as requests' own read."""
    declared = response.headers.get("Content-Length", "")
    beyond = f"the {_size(cap)} an answer may hold, far above the contract's largest page"
    if declared.isdigit() and int(declared) > cap and response.request.method != "HEAD":
        response.close()
        raise _TooLarge(response, f"its Content-Length of {int(declared):,} bytes is over {beyond}; refused unread")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > cap:
            response.close()
            raise _TooLarge(response, f"its body ran past {beyond}; reading stopped there")
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what `.content` and `.json()` give, as after requests' own read


# Text that was not UTF-8 on the wire: undecodable bytes as surrogateescape makes them
# (U+DC80–U+DCFF), or a surrogate a \uXXXX escape left alone (a valid pair decodes as one character).
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
MOST_PLACES = 5  # items named in a NotUtf8 error; the rest are counted


def _undecodable(node: Any, owner: dict[str, Any] | None = None, path: tuple[str, ...] = ()
                 ) -> Iterator[tuple[dict[str, Any] | None, str, str]]:
    """(nearest object with an `id`, path from it, the text) of each key or string in `node`
    holding text that was not UTF-8."""
    if isinstance(node, dict):
        if "id" in node:
            owner, path = node, ()
        for key, item in node.items():
            if _SURROGATE.search(key):
                yield owner, ".".join((*path, key)), key
            yield from _undecodable(item, owner, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _undecodable(item, owner, (*path, str(index)))
    elif isinstance(node, str) and _SURROGATE.search(node):
        yield owner, ".".join(path), node


def _shown(value: object) -> str:
    """A value for a message, quoted: bytes that were not UTF-8 as \\xNN, the rest escaped, cut short."""
    raw = "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in str(value))
    return f'"{textsafe.text(textsafe.shortened(raw, 80))}"'


def _not_utf8_places(data: Any) -> list[str]:
    """Each item holding text that was not UTF-8, by id (and name, title, asset tag), with the
    fields and their text: what `NotUtf8` says."""
    fields_of: dict[int, tuple[dict[str, Any] | None, list[str]]] = {}
    for owner, where, found in _undecodable(data):
        fields_of.setdefault(id(owner), (owner, []))[1].append(f"{where or 'the answer itself'} = {_shown(found)}")
    places = []
    for owner, fields in fields_of.values():
        who = "the answer"
        if owner is not None:
            names = [f'{key.replace("_", " ")} {_shown(owner[key])}' for key in ("name", "title", "asset_tag")
                     if isinstance(owner.get(key), str)]
            who = f"item {textsafe.text(owner['id'])}" + (f" ({', '.join(names)})" if names else "")
        places.append(f"{who} at {', '.join(fields)}")
    more = len(places) - MOST_PLACES
    return places[:MOST_PLACES] + ([f"{more} more item{'s' * (more != 1)}"] if more > 0 else [])
