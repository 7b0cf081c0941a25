"""What both writers share: grouping change rows into calls, sending the request the plan
stored for each (`Request`), and recording what happened."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from hector_sync.c2 import C2Client
from hector_sync.errors import InvalidData, NotFound, VersionConflict
from hector_sync.hector import HectorClient
from hector_sync.progress import Progress
from hector_sync.reconcile.mapping import CategoryPlan
from hector_sync.plans import Plan, PlanBook
from hector_sync.state import SyncState
from hector_sync.store import HISTORY_COLUMNS, HISTORY_SCHEMA, Store

FLUSH_EVERY = 500
SEND_BATCH = 200  # groups marked `sending` in one DuckDB write before their calls start
WORKERS = 8  # calls in flight at once: waits on slow or rate-limited answers overlap
Row = dict[str, Any]
Log = Callable[[str], None]
OUTCOME_OF = {
    "create_subcategory": "created", "update_subcategory": "updated", "create_asset": "created",
    "link_asset": "linked", "unlink_asset": "unlinked", "unlink_ci": "unlinked", "update_asset": "updated",
    "move_asset": "moved", "retire_asset": "retired",
    "revert_drift": "reverted", "create_ci": "created", "link_ci": "linked", "update_ci": "updated",
    "retire_ci": "retired", "reactivate_asset": "reactivated", "reactivate_ci": "reactivated",
}
REPORTS = {"skip": "skipped", "missing": "reported", "conflict": "conflict"}


def _keys(groups: list[tuple[str, list[Row]]]) -> list[tuple[str, str]]:
    return [(r["action"], r["item"]) for _, rows in groups for r in rows]


def items(changes: pl.DataFrame, *actions: str, by: str = "item") -> Iterator[tuple[str, list[Row]]]:
    """Change rows of the given actions grouped per API call (by `by`, else by item)."""
    subset = changes.filter(pl.col("action").is_in(actions))
    if subset.is_empty():
        return
    for (key,), group in subset.group_by(pl.coalesce(by, "item").alias("_k"), maintain_order=True):
        yield str(key), group.to_dicts()


def calls(changes: pl.DataFrame, *actions: str, by: str = "item") -> int:
    """How many API calls `items(changes, *actions, by=by)` makes: one per group."""
    subset = changes.filter(pl.col("action").is_in(actions))
    return 0 if subset.is_empty() else int(subset.select(pl.coalesce(by, "item").n_unique()).item())


@dataclass(frozen=True)
class Request:
    """The API call of a group of change rows, as the plan stored it on each of them
    (`reconcile.requests`): sent as it is, but for what only the writer can know."""

    method: str
    target: str
    body: dict[str, Any]
    version: int | None  # the If-Match of a PATCH

    @classmethod
    def of(cls, rows: list[Row]) -> Request:
        """The request of a call's rows: its first row carries it (`reconcile.requests`)."""
        lead = next(r for r in rows if r["method"] is not None)
        return cls(lead["method"], lead["target"], json.loads(lead["body"]), lead["target_version"])

    def send(self, client: HectorClient | C2Client) -> dict[str, Any]:
        return client.send(self.method, self.target, self.body, self.version)


@dataclass(kw_only=True)
class Writeback:
    """Outcomes, history, links and baselines of one plan's writeback, flushed in batches.

    Items are written by up to `workers` threads (`each`); everything they record goes through
    one lock, and the main thread flushes it to DuckDB with the rows' new states. `calls_done`
    counts the API calls made of those planned (`begin`), and logs the progress (`what`:
    "Hector writes").
    """

    store: Store
    plan: CategoryPlan
    applying: Plan  # the plan whose rows are written
    run_id: str | None
    log: Log
    workers: int = WORKERS
    what: str = "writes"  # what its progress lines count, after the category key
    outcomes: Counter[str] = field(default_factory=Counter)
    _history: list[Row] = field(default_factory=list)
    _links: list[tuple[str, int]] = field(default_factory=list)
    _agreed: list[tuple[str, int, str, str | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    calls_done: Progress | None = None

    def begin(self, planned: int) -> Progress:
        """Start counting the `planned` API calls of this writeback."""
        self.calls_done = Progress(f"{self.plan.key}: {self.what}", self.log, total=planned)
        return self.calls_done

    def called(self) -> None:
        """One planned API call made (whatever its answer); safe from any thread."""
        if self.calls_done is not None:
            self.calls_done.advance()

    def each(
        self, groups: Iterable[tuple[str, list[Row]]], work: Callable[[str, list[Row]], object]
    ) -> None:
        """`work(item, rows)` for every group, `workers` at a time, in bounded memory. Each
        batch is marked `sending` before its calls start, so a rerun after a kill knows which
        items may have reached the system. A fault of the system (credentials, permission,
        unavailable) stops the rest and is raised."""

        def counted(item: str, rows: list[Row]) -> None:
            work(item, rows)
            self.called()

        book = PlanBook(self.store)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="writeback") as pool:
            pending: set[Future[None]] = set()
            try:
                for n, (item, rows) in enumerate(self._marked(book, groups), start=1):
                    pending.add(pool.submit(counted, item, rows))
                    if len(pending) >= 4 * self.workers:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in finished:
                            future.result()
                    if n % FLUSH_EVERY == 0:
                        self.flush()
                for future in pending:
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _marked(self, book: PlanBook, groups: Iterable[tuple[str, list[Row]]]) -> Iterator[tuple[str, list[Row]]]:
        """The groups, each batch of SEND_BATCH marked `sending` before the first is handed out."""
        batch: list[tuple[str, list[Row]]] = []
        for group in groups:
            batch.append(group)
            if len(batch) == SEND_BATCH:
                book.mark_sending(self.applying.plan_id, _keys(batch))
                yield from batch
                batch = []
        book.mark_sending(self.applying.plan_id, _keys(batch))
        yield from batch

    def run(self, changes: pl.DataFrame) -> None:
        """Write the change set, counting the calls of `planned_calls` as they are made."""
        progress = self.begin(self.planned_calls(changes))
        try:
            self.write_all(changes)
        except BaseException:
            progress.finish(ok=False)
            raise
        finally:
            self.flush()
        progress.finish()

    def planned_calls(self, changes: pl.DataFrame) -> int:
        """How many API calls `write_all` makes for `changes` (one per item group)."""
        raise NotImplementedError

    def write_all(self, changes: pl.DataFrame) -> None:
        """The writer's own steps; each call made is counted with `called` (`each` does it)."""
        raise NotImplementedError

    def done(self, rows: list[Row], outcome: str, message: str | None = None) -> None:
        now = datetime.now(UTC)
        recorded = [
            {**{c: r.get(c) for c in HISTORY_COLUMNS}, "run_id": self.run_id, "plan_id": self.applying.plan_id, "outcome": outcome,
             "message": message or r.get("reason"), "recorded_at": now}
            for r in rows
        ]
        with self._lock:
            self.outcomes[outcome] += 1
            self._history += recorded

    def link(self, ci_id: str, asset_id: int) -> None:
        with self._lock:
            self._links.append((ci_id, asset_id))

    def agreed(self, ci_id: str, asset_id: int, fields: dict[str, str | None]) -> None:
        """Values both sides hold after our write: the per_field baseline, so it is no echo."""
        if self.plan.per_field:
            with self._lock:
                self._agreed += [(ci_id, asset_id, name, value) for name, value in fields.items()]

    def write(self, rows: list[Row], call: Callable[[], Any]) -> bool:
        """One API call for the rows of one item; refusals are recorded, faults propagate."""
        try:
            call()
        except VersionConflict:
            self.done(rows, "conflict", "changed since the snapshot; the next sync retries it")
            return False
        except (InvalidData, NotFound) as refused:
            self.done(rows, "refused", str(refused))
            return False
        for r in rows:
            self.done([r], OUTCOME_OF[r["action"]])
        return True

    def record_reports(self, changes: pl.DataFrame) -> None:
        for _, rows in items(changes, *REPORTS):
            self.done(rows, REPORTS[rows[0]["action"]])

    def linked_since(self, column: str, items: list[str], since: datetime | None) -> dict[str, str]:
        """Items (by `column` of the link table) linked after `since`: created or linked by a
        run after this plan's read, so a create of them must never be sent again."""
        if not items:
            return {}
        other = "asset_id" if column == "ci_id" else "ci_id"
        frame = self.store.query(
            f"SELECT CAST({column} AS VARCHAR), CAST({other} AS VARCHAR) FROM link WHERE category_key = ? "
            f"AND CAST({column} AS VARCHAR) IN (SELECT unnest(?::VARCHAR[])) AND (? IS NULL OR linked_at > ?)",
            [self.plan.key, items, since, since],
        )
        return dict(frame.iter_rows())

    def flush(self) -> None:
        with self._lock:
            history, links, agreed = self._history, self._links, self._agreed
            self._history, self._links, self._agreed = [], [], []
        if history:
            PlanBook(self.store).record(pl.DataFrame(history, schema=HISTORY_SCHEMA))
        state = SyncState(self.store)
        state.upsert_links(self.plan.key, links, self.run_id)
        state.upsert_baseline(self.plan.key, agreed, self.run_id)
