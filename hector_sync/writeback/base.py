"""What both writers share: grouping change rows into calls, and recording what happened."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from hector_sync.errors import InvalidData, NotFound, VersionConflict
from hector_sync.reconcile.mapping import CategoryPlan, Kind
from hector_sync.store import HISTORY_COLUMNS, HISTORY_SCHEMA, Store

FLUSH_EVERY = 500
Row = dict[str, Any]
Log = Callable[[str], None]
OUTCOME_OF = {
    "create_subcategory": "created", "update_subcategory": "updated", "create_asset": "created",
    "link_asset": "linked", "update_asset": "updated", "move_asset": "moved", "retire_asset": "retired",
    "revert_drift": "reverted", "create_ci": "created", "link_ci": "linked", "update_ci": "updated",
    "retire_ci": "retired",
}
REPORTS = {"skip": "skipped", "missing": "reported"}


def typed(kind: Kind | str, value: str | None) -> Any:
    """A canonical text value as the API wants it: numbers as JSON numbers."""
    if value is None or kind != "number":
        return value
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def items(changes: pl.DataFrame, *actions: str, by: str = "item") -> Iterator[tuple[str, list[Row]]]:
    """Change rows of the given actions grouped per API call (by `by`, else by item)."""
    subset = changes.filter(pl.col("action").is_in(actions))
    if subset.is_empty():
        return
    for (key,), group in subset.group_by(pl.coalesce(by, "item").alias("_k"), maintain_order=True):
        yield str(key), group.to_dicts()


def current_assets(store: Store, category_key: str, ids: pl.Series) -> dict[int, tuple[dict[str, Any], list[dict[str, Any]], int]]:
    """Attributes, external refs and version of the assets about to be patched, to merge into."""
    wanted = ids.drop_nulls().unique().cast(pl.Int64).to_list()
    if not wanted:
        return {}
    frame = store.query(
        "SELECT id, CAST(to_json(attributes) AS VARCHAR), external_refs, version FROM hector_asset "
        "WHERE category_key = ? AND id IN (SELECT unnest(?::BIGINT[]))",
        [category_key, wanted],
    )
    return {i: (json.loads(a or "{}"), json.loads(r or "[]"), v) for i, a, r, v in frame.iter_rows()}


@dataclass(kw_only=True)
class Writeback:
    """Outcomes, history, links and baselines of one category's writeback, flushed in batches."""

    store: Store
    plan: CategoryPlan
    run_id: str | None
    log: Log
    outcomes: Counter[str] = field(default_factory=Counter)
    _history: list[Row] = field(default_factory=list)
    _links: list[tuple[str, int]] = field(default_factory=list)
    _agreed: list[tuple[str, int, str, str | None]] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)

    def done(self, rows: list[Row], outcome: str, message: str | None = None) -> None:
        self.outcomes[outcome] += 1
        now = datetime.now(UTC)
        for r in rows:
            self._history.append(
                {**{c: r.get(c) for c in HISTORY_COLUMNS}, "run_id": self.run_id, "outcome": outcome,
                 "message": message or r.get("reason"), "recorded_at": now}
            )

    def link(self, ci_id: str, asset_id: int) -> None:
        self._links.append((ci_id, asset_id))

    def agreed(self, ci_id: str, asset_id: int, fields: dict[str, str | None]) -> None:
        """Values both sides hold after our write: the per_field baseline, so it is no echo."""
        if self.plan.per_field:
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

    def progress(self, verb: str, n: int) -> None:
        if n % FLUSH_EVERY == 0:
            self.flush()
            rate = n / max(time.monotonic() - self._started, 1e-6)
            self.log(f"{self.plan.key}: {n} {verb} ({rate:.0f}/s)")

    def flush(self) -> None:
        if self._history:
            self.store.append_history(pl.DataFrame(self._history, schema=HISTORY_SCHEMA))
            self._history = []
        self.store.upsert_links(self.plan.key, self._links, self.run_id)
        self._links = []
        self.store.upsert_baseline(self.plan.key, self._agreed, self.run_id)
        self._agreed = []
