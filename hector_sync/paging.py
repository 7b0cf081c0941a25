"""Paged lists that account for everything they announced, within the time a read may take.

Both APIs page their lists, and a read that ends early, skips or repeats a page, never ends or
outlasts `max_read_time` must fail rather than pass for complete. The accounting behind both
paginators (`C2Client.iter_ci_pages`, `HectorClient._iter_pages`) is one concept, apart from
HTTP: a `Listing` tallies each answer's items against the total it announced and raises
`ListingIncomplete`; a `Deadline` bounds a read that may span several lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hector_sync.errors import System, UnexpectedAnswer

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
