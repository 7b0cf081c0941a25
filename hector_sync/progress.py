"""Progress of a long read or writeback as log lines: items and pages done, rate, time left.

One `Progress` counts one thing ("printers: C2 CIs read", "printers: Hector writes"). It writes
through the `log` callable it is given (in Dagster `context.log.info`, which the run log keeps
and `hector-sync sync` prints on stderr) at most one line every `interval_s` seconds, and a
final line when `finish` is called, so a million CIs make a few dozen lines and forty CIs one:

    printers: C2 CIs read: page 120/2000, 60,000 of 1,000,000 (4,980/s), about 3 min 9 s left
    printers: C2 CIs read: done, 2000 pages, 1,000,000 of 1,000,000 in 3 min 21 s (4,975/s)

Every method may be called from any thread; the clock is injectable for tests.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

INTERVAL_S = 5.0  # at most one progress line this often, plus the final one
INTERVAL_ENV = "HECTOR_SYNC_PROGRESS_SECONDS"  # overrides INTERVAL_S (seconds; 0: every step)

Log = Callable[[str], None]
Clock = Callable[[], float]


def default_interval() -> float:
    """INTERVAL_S, or the seconds in $HECTOR_SYNC_PROGRESS_SECONDS when that is a number >= 0."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        value = float(raw)
    except ValueError:
        return INTERVAL_S
    return value if value >= 0 and math.isfinite(value) else INTERVAL_S


def duration(seconds: float, *, tenths: bool = True) -> str:
    """`0.4 s` (below 10 s, with `tenths`), `12 s`, `3 min 9 s`, `2 h 5 min`."""
    if tenths and round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def rate_text(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"


class Progress:
    """Counts items (and pages, for a read) toward a total that may be unknown."""

    def __init__(
        self, what: str, log: Log, *, total: int | None = None, pages: bool = False,
        interval_s: float | None = None, clock: Clock = time.monotonic,
    ) -> None:
        """`what` leads every line; `pages` says the work comes in pages (a read) and lines
        show them; `interval_s` defaults to `default_interval()`."""
        self.what = what
        self.log = log
        self.total = total
        self.pages_total: int | None = None
        self.counts_pages = pages
        self.interval_s = default_interval() if interval_s is None else interval_s
        self.clock = clock
        self.done = 0
        self.pages = 0
        self.finished = False
        self._started = clock()
        self._last_line = self._started
        self._lock = threading.Lock()

    def expect(self, total: int | None, pages: int | None = None) -> None:
        """The total as the system now answers it (items; pages too for a read)."""
        with self._lock:
            self.total = total
            self.pages_total = pages

    def advance(self, items: int = 1, pages: int = 0) -> None:
        """`items` (and `pages`) more done; logs a line when the last one is `interval_s` old."""
        with self._lock:  # held while logging too, so lines from several threads stay in order
            self.done += items
            self.pages += pages
            now = self.clock()
            if self.finished or now - self._last_line < self.interval_s:
                return
            self._last_line = now
            self.log(self._line(now))

    def finish(self, ok: bool = True) -> None:
        """The final line, once: `done`, or `stopped` when the work failed partway."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            self.log(self._final(self.clock(), "done" if ok else "stopped"))

    # The lines; built and logged with the lock held.

    def _rate(self, now: float) -> float:
        return self.done / max(now - self._started, 1e-6)

    def _count(self) -> str:
        return f"{self.done:,}" if self.total is None else f"{self.done:,} of {self.total:,}"

    def seconds_left(self, now: float | None = None) -> float | None:
        """From the rate so far; None when the total is unknown, nothing is done yet, or the
        total is reached."""
        now = self.clock() if now is None else now
        if self.total is None or self.done <= 0 or self.done >= self.total:
            return None
        return (self.total - self.done) / self._rate(now)

    def _line(self, now: float) -> str:
        parts = []
        if self.counts_pages:
            shown_total = self.pages_total if self.pages_total and self.pages_total >= self.pages else None
            parts.append(f"page {self.pages}" + (f"/{shown_total}" if shown_total else ""))
        parts.append(f"{self._count()} ({rate_text(self._rate(now))})")
        left = self.seconds_left(now)
        if left is not None:
            parts.append(f"about {duration(max(1, math.ceil(left)), tenths=False)} left")
        return f"{self.what}: " + ", ".join(parts)

    def _final(self, now: float, status: str) -> str:
        pages = f"{self.pages} page{'s' if self.pages != 1 else ''}, " if self.counts_pages else ""
        elapsed = now - self._started
        return f"{self.what}: {status}, {pages}{self._count()} in {duration(elapsed)} ({rate_text(self._rate(now))})"


__all__ = ["INTERVAL_ENV", "INTERVAL_S", "Progress", "default_interval", "duration"]
