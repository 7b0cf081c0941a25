"""How a client's calls are paced and retried: the transport under `http.JsonApi`.

Pacing and retrying answer to the server's capacity and to the network, not to what a call asks or
what its answer means, so they live apart from the JSON client, which only hands its calls to
them: one requests Session per client (`build_session`), whose urllib3 Retry (`RetryPolicy`,
`TransientRetry`, `BudgetAdapter`) retries exactly what both contracts call transient and replays
after a lost answer only what is safe to send twice (`REPLAYABLE_METHODS`); a `Throttle` that
paces all of a client's threads (its own rate limit, and the Retry-After a server asks for),
shared by every process of the deployment through a ledger file (`budget_file`); a `Breaker` that
stops calling a server that stayed down through a whole retry budget; and the `CallStats` each
step reports. `http.JsonApi` decides what to send and what an answer means; this module decides
when a call goes out, and how often.
"""

from __future__ import annotations

import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import InvalidHeader
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

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
