"""Executes a Hector change set: subcategories before assets, one API call per item.

Each item's outcome goes to the append-only history with its change rows, in batches so the
DuckDB lock is taken briefly. An item Hector refuses (422) or that changed under us (409) is
recorded and the others go on; a fault of the system itself (credentials, permission,
unavailable) stops the category after recording what was done, so a rerun resumes cleanly.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from hector_sync.catalog import ResolvedCategory
from hector_sync.errors import Duplicate, InvalidData, NotFound, VersionConflict
from hector_sync.hector import HectorClient
from hector_sync.reconcile.mapping import CategoryPlan, Kind
from hector_sync.reconcile.match import hector_models
from hector_sync.store import HISTORY_COLUMNS, HISTORY_SCHEMA, Store

FLUSH_EVERY = 500
ASSET_ACTIONS = ("link_asset", "update_asset", "move_asset", "retire_asset")
OUTCOME_OF = {
    "create_subcategory": "created", "update_subcategory": "updated", "create_asset": "created",
    "link_asset": "linked", "update_asset": "updated", "move_asset": "moved", "retire_asset": "retired",
}
Log = Callable[[str], None]


def _typed(kind: Kind, value: str | None) -> Any:
    if value is None or kind != "number":
        return value
    return float(value)


@dataclass
class Applier:
    client: HectorClient
    store: Store
    resolved: ResolvedCategory
    plan: CategoryPlan
    run_id: str | None
    log: Log
    outcomes: Counter[str] = field(default_factory=Counter)
    _history: list[dict[str, Any]] = field(default_factory=list)
    _links: list[tuple[str, int]] = field(default_factory=list)
    _models: dict[str, int] = field(default_factory=dict)

    def run(self, changes: pl.DataFrame) -> Counter[str]:
        started = time.monotonic()
        self._models = dict(self.store.query(f"SELECT model_key, min(id) FROM ({hector_models(self.plan)}) GROUP BY 1").iter_rows())
        try:
            for item, rows in _items(changes, "create_subcategory"):
                self._create_subcategory(item, rows)
            for item, rows in _items(changes, "update_subcategory"):
                self._write(rows, lambda r: self.client.update_subcategory(
                    int(r[0]["target_id"]), r[0]["target_version"], self._body(r, "model")))
            for n, (item, rows) in enumerate(_items(changes, "create_asset"), start=1):
                self._create_asset(item, rows)
                self._progress("created", n, started)
            current = self._current_assets(changes)
            for _, rows in _items(changes, *ASSET_ACTIONS):
                self._update_asset(rows, current)
            self._record_reports(changes)
        finally:
            self._flush()
        return self.outcomes

    def _progress(self, verb: str, n: int, started: float) -> None:
        if n % FLUSH_EVERY == 0:
            self._flush()
            self.log(f"{self.plan.key}: {n} assets {verb} ({n / (time.monotonic() - started):.0f}/s)")

    def _body(self, rows: list[dict[str, Any]], scope: str) -> dict[str, Any]:
        """The typed API body of a group of change rows of one item."""
        body: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        kinds = {t.name: t.kind for t in self.plan.targets if t.scope == scope}
        for r in rows:
            name = r["field"]
            if name in kinds:
                value = _typed(kinds[name], r["new"])
                if name.startswith("attributes."):
                    attributes[name.removeprefix("attributes.")] = value
                else:
                    body[name] = value
        if attributes:
            body["attributes"] = attributes
        return body

    def _create_subcategory(self, item: str, rows: list[dict[str, Any]]) -> None:
        body = {"category_id": self.resolved.hector_category_id, **self._body(rows, "model")}
        try:
            created = self.client.create_subcategory(body)
            self._models[item] = int(created["id"])
            self._done(rows, "created")
        except Duplicate as dup:
            self._models[item] = int(dup.existing_id)
            self._done(rows, "already_there", f"Hector already had it as subcategory {dup.existing_id}")
        except (InvalidData, VersionConflict, NotFound) as refused:
            self._done(rows, "refused", str(refused))

    def _create_asset(self, item: str, rows: list[dict[str, Any]]) -> None:
        model_id = self._models.get(rows[0]["model_key"])
        if model_id is None:
            self._done(rows, "refused", "its subcategory could not be created")
            return
        body = {
            **self._body(rows, "asset"),
            "subcategory_id": model_id,
            "stockroom_id": self.resolved.stockroom_id,
            "external_refs": [{"source": "c2", "id": item}],
        }
        try:
            created = self.client.create_asset(body)
            self._links.append((item, int(created["id"])))
            self._done(rows, "created")
        except Duplicate as dup:
            # A create whose answer was lost, or an asset tag already in use: link, never duplicate.
            self._links.append((item, int(dup.existing_id)))
            self._done(rows, "already_there", f"Hector already had it as asset {dup.existing_id}")
        except (InvalidData, VersionConflict, NotFound) as refused:
            self._done(rows, "refused", str(refused))

    def _current_assets(self, changes: pl.DataFrame) -> dict[int, tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Attributes and external refs of the assets about to be patched, to merge into."""
        ids = changes.filter(pl.col("action").is_in(ASSET_ACTIONS))["target_id"].unique().cast(pl.Int64)
        if ids.is_empty():
            return {}
        frame = self.store.query(
            "SELECT id, CAST(to_json(attributes) AS VARCHAR) AS attributes, external_refs FROM hector_asset "
            "WHERE category_key = ? AND id IN (SELECT unnest(?::BIGINT[]))",
            [self.plan.key, ids.to_list()],
        )
        return {
            row[0]: (json.loads(row[1] or "{}"), json.loads(row[2] or "[]")) for row in frame.iter_rows()
        }

    def _update_asset(self, rows: list[dict[str, Any]], current: dict) -> None:
        """One PATCH per asset, whatever its rows link, update, move or retire."""
        ci_id, asset_id = rows[0]["item"], int(rows[0]["target_id"])
        attributes, refs = current.get(asset_id, ({}, []))
        body = self._body(rows, "asset")
        if "attributes" in body:
            body["attributes"] = {k: v for k, v in attributes.items() if v is not None} | body["attributes"]
        actions = {r["action"] for r in rows}
        if "link_asset" in actions:
            body["external_refs"] = [r for r in refs if r.get("source") != "c2"] + [{"source": "c2", "id": ci_id}]
            self._links.append((ci_id, asset_id))
        if "move_asset" in actions:
            body["subcategory_id"] = self._models.get(rows[0]["model_key"])
        if "retire_asset" in actions:
            body["status"] = "retired"
        self._write(rows, lambda r: self.client.update_asset(asset_id, r[0]["target_version"], body))

    def _write(self, rows: list[dict[str, Any]], call: Callable[[list[dict[str, Any]]], Any]) -> None:
        try:
            call(rows)
            for r in rows:
                self._done([r], OUTCOME_OF[r["action"]])
        except VersionConflict:
            self._done(rows, "conflict", "changed in Hector since the snapshot; the next sync retries it")
        except (InvalidData, NotFound) as refused:
            self._done(rows, "refused", str(refused))

    def _record_reports(self, changes: pl.DataFrame) -> None:
        for item, rows in _items(changes, "skip", "missing"):
            self._done(rows, "skipped" if rows[0]["action"] == "skip" else "reported")

    def _done(self, rows: list[dict[str, Any]], outcome: str, message: str | None = None) -> None:
        self.outcomes[outcome] += 1
        now = datetime.now(UTC)
        for r in rows:
            self._history.append(
                {**{c: r.get(c) for c in HISTORY_COLUMNS}, "run_id": self.run_id, "outcome": outcome,
                 "message": message or r.get("reason"), "recorded_at": now}
            )

    def _flush(self) -> None:
        if self._history:
            self.store.append_history(pl.DataFrame(self._history, schema=HISTORY_SCHEMA))
            self._history = []
        self.store.upsert_links(self.plan.key, self._links, self.run_id)
        self._links = []


def _items(changes: pl.DataFrame, *actions: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Change rows of the given actions grouped per API call (by asset for asset updates)."""
    subset = changes.filter(pl.col("action").is_in(actions))
    if subset.is_empty():
        return
    key = "target_id" if actions[0] in ASSET_ACTIONS else "item"
    for (item,), group in subset.group_by(pl.coalesce(key, "item").alias("_k"), maintain_order=True):
        yield str(item), group.to_dicts()
