"""One category's sync as plain steps, without Dagster: what each asset runs, and what `plan` runs.

The steps share their state through the DuckDB file only, so any of them can be rerun alone
(a rematerialized partition), and `plan` stops before `apply` having written to DuckDB only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl

from hector_sync.c2 import C2Client
from hector_sync.catalog import Catalog, MappingInvalid, ResolvedCategory, mapping_of
from hector_sync.config import SYSTEM_NAMES, TO_C2, TO_HECTOR, CategoryConfig, Direction, SyncConfig
from hector_sync.hector import HectorClient
from hector_sync.plans import Plan, PlanBook, PlanKind, StalePlan, UnknownPlan
from hector_sync.progress import Progress
from hector_sync.reconcile import Derived, Reconciler
from hector_sync.reconcile.changes import ChangeSet, Guard, Summary, summarize
from hector_sync.reconcile.requests import REQUESTING
from hector_sync.snapshot import Noted, Snapshot, read_c2, read_hector
from hector_sync.state import SyncState
from hector_sync.store import Store
from hector_sync.writeback.c2 import C2Writeback
from hector_sync.writeback.hector import HectorWriteback

ReadMode = Literal["auto", "full", "incremental"]
INCREMENTAL_WINDOW = timedelta(days=7)
Log = Callable[[str], None]


class GuardRefused(Exception):
    """The change set looks like a wipe; nothing of the category was written."""


@dataclass(frozen=True)
class Applied:
    """What one writeback did with its plan: outcomes per change row, API calls, and, when it
    had nothing to send, why (`idle`)."""

    plan: Plan
    outcomes: Counter[str]
    calls: dict[str, int]
    idle: str | None = None


def full_read_day(config: SyncConfig, instant: datetime) -> bool:
    weekday = instant.astimezone(ZoneInfo(config.schedule.timezone)).strftime("%A").lower()
    return weekday == config.schedule.full_sync_weekday


@contextmanager
def open_clients(config: SyncConfig) -> Iterator[tuple[C2Client, HectorClient]]:
    """Both systems' clients for a command outside Dagster (in Dagster, the run's resources)."""
    with C2Client.for_sync(config) as c2, HectorClient.for_sync(config) as hector:
        yield c2, hector


@dataclass
class StoredCategory:
    """One category as the DuckDB file keeps it: its kept resolutions and the reconciler over
    its snapshots. It holds no client, so a command that only reads or notes things in the file
    (`hector-sync held`, `link`) pairs items by the very rules of a run, without calling either
    system."""

    config: SyncConfig
    category: CategoryConfig
    store: Store

    @property
    def key(self) -> str:
        return self.category.key

    @cached_property
    def state(self) -> SyncState:
        return SyncState(self.store)

    @cached_property
    def reads(self) -> dict[str, dict[str, object]]:
        """The category's last stored read per system (`snapshot_state`), asked once: a step
        asks it several times, and only its own reads change it (the snapshots, which drop it)."""
        return self.state.snapshot_states(self.key)

    def stored_catalog(self, catalog_id: str | None = None) -> tuple[str, ResolvedCategory]:
        """A kept resolution (`catalog_id`, else the latest), if the file still maps the category
        as it did then; else MappingInvalid saying what to rematerialize."""
        row = self.state.catalog(self.key, catalog_id)
        if row is None:
            raise MappingInvalid(self.key, ["its names were never resolved: materialize category_catalog, "
                                            "or run the category's whole job"])
        if row["mapping"] != mapping_of(self.config, self.category):
            raise MappingInvalid(self.key, [
                f"its mapping in the configuration changed since run {row['run_id']} resolved it ({row['catalog_id']}): "
                "materialize category_catalog and both snapshots again, or run the category's whole job"])
        return str(row["catalog_id"]), ResolvedCategory.from_json(self.category, str(row["resolution"]))

    @cached_property
    def latest_catalog(self) -> tuple[str, ResolvedCategory]:
        """The latest kept resolution: what a read reads with."""
        return self.stored_catalog()

    @cached_property
    def catalog(self) -> tuple[str, ResolvedCategory]:
        """The resolution the steps after the reads use: the one the newest snapshot read with,
        so that a step rerun alone works with exactly its snapshot's ids."""
        reads = [r for r in self.reads.values() if r["catalog_id"]]
        newest = max(reads, key=lambda r: r["read_at"])["catalog_id"] if reads else None  # type: ignore[arg-type,return-value]
        return self.stored_catalog(str(newest) if newest else None)

    @property
    def resolved(self) -> ResolvedCategory:
        return self.catalog[1]

    @cached_property
    def reconciler(self) -> Reconciler:
        c2_types = {name: f.type for name, f in self.resolved.c2_fields.items()}
        return Reconciler.for_category(
            self.category, self.resolved.attribute_kinds, self.config.default_stockroom, c2_types,
            self.resolved.api_names,
        )


@dataclass
class CategorySync(StoredCategory):
    """One category's steps over the clients it is handed: one pair serves every step of a run,
    so a run logs in once, paces all its calls on one limiter and trips one breaker."""

    c2: C2Client
    hector: HectorClient
    log: Log = print
    run_id: str | None = None

    def flows(self, direction: Direction | None = None) -> bool:
        """Whether the category syncs at all, or toward `direction`."""
        flows = self.category.direction.flows
        return bool(flows) if direction is None else direction in flows

    def problems(self) -> list[str]:
        """What the mapping names that the live systems lack, as this command (or run) listed them:
        the check before a writeback."""
        return Catalog(self.config, self.c2, self.hector).problems(self.category)

    def resolve_catalog(self) -> tuple[str, ResolvedCategory]:
        """Resolve the category's names against both live systems and keep the resolution: the
        `category_catalog` asset, and `plan` before its reads. Raises MappingInvalid."""
        resolved = Catalog(self.config, self.c2, self.hector).resolve(self.category)
        mapping = mapping_of(self.config, self.category)
        catalog_id = self.state.save_catalog(self.key, self.run_id, mapping, resolved.to_json())
        self.__dict__["latest_catalog"] = (catalog_id, resolved)  # what this sync's reads then read with
        return catalog_id, resolved

    def since(self, system: str, mode: ReadMode) -> datetime | None:
        """None for a full read: forced, on full_sync_weekday, or with no earlier snapshot."""
        now = datetime.now(UTC)
        if mode == "auto":
            mode = "full" if full_read_day(self.config, now) else "incremental"
        if mode == "full" or system not in self.reads:
            return None
        return now - INCREMENTAL_WINDOW

    def _progress(self, what: str) -> Progress:
        """A reporter of `what` ("C2 CIs read") for this category, through the sync's log."""
        return Progress(f"{self.key}: {what}", self.log, pages=True)

    def _noted(self, system: str, catalog_id: str) -> Noted:
        """What notes a finished read of `system` and the resolution it read with."""
        return lambda snap: self.state.record_snapshot(
            self.key, system, snap.read_kind, self.run_id, snap.table_rows, catalog_id)

    def snapshot_c2(self, mode: ReadMode) -> tuple[Snapshot, dict[str, int]]:
        catalog_id, resolved = self.latest_catalog
        with self.c2.stats.counting() as calls:
            snap = read_c2(self.c2, self.store, resolved, since=self.since("c2", mode), progress=self._progress,
                           max_read_time=self.config.max_read_time, noted=self._noted("c2", catalog_id))
        self.__dict__.pop("reads", None)
        self.__dict__["catalog"] = (catalog_id, resolved)  # the steps after this read use its resolution
        return snap, calls

    def snapshot_hector(self, mode: ReadMode) -> tuple[Snapshot, Snapshot, dict[str, int]]:
        catalog_id, resolved = self.latest_catalog
        with self.hector.stats.counting() as calls:
            models, assets = read_hector(
                self.hector, self.store, resolved, since=self.since("hector", mode), progress=self._progress,
                max_read_time=self.config.max_read_time, noted=self._noted("hector", catalog_id),
            )
        self.__dict__.pop("reads", None)
        self.__dict__["catalog"] = (catalog_id, resolved)
        return models, assets, calls

    def derive(self, direction: Direction) -> Derived:
        with self.store.connect() as con:
            if direction is TO_HECTOR:
                return self.reconciler.derive(con)
            return self.reconciler.derive_c2(con)

    def plan(self, direction: Direction) -> tuple[Plan, pl.DataFrame]:
        """Compute the change set toward `direction` from the snapshots and keep it as a new plan:
        the plan, and its rows (the plan counts the unchanged items)."""
        state = self.reads.get(direction.source, {})
        with self.store.connect() as con:
            changes = self.reconciler.changes(con, direction, full_read=state.get("read_kind") == "full")
            self.reconciler.agree(con, self.run_id)
        plan = self.new_plan(direction, "sync", changes)
        PlanBook(self.store).save(plan, changes.rows)
        if direction is TO_C2:
            self.state.settle_intents(self.key)
        self.state.settle_unlinks(self.key)
        return plan, changes.rows

    def plan_undo(self, direction: Direction, run_id: str) -> tuple[Plan, pl.DataFrame]:
        """The inverse of what `run_id` applied toward `direction`, over fresh snapshots, kept as
        a plan of kind undo (it does not replace the category's sync plan)."""
        with self.store.connect() as con:
            changes = self.reconciler.undo(con, direction, run_id)
        plan = self.new_plan(direction, "undo", changes, undo_of=run_id)
        PlanBook(self.store).save(plan, changes.rows)
        return plan, changes.rows

    def new_plan(self, direction: Direction, kind: PlanKind, changes: ChangeSet, undo_of: str | None = None) -> Plan:
        """A plan's identity: this run, now, the reads of both sides it is computed from, and
        the guard's verdict on `changes`, weighed here once for every reader of the plan."""
        now = datetime.now(UTC)
        reads = self.latest_reads()
        (c2_run, c2_at), (hector_run, hector_at) = (reads.get(s, (None, None)) for s in ("c2", "hector"))
        summary = self.summary(direction, changes)
        state = self.reads.get(direction.source, {})
        guard = Guard(
            self.category.max_change_fraction, int(state.get("row_count") or 0), state.get("previous_row_count"), direction
        )
        return Plan(
            plan_id=Plan.new_id(self.key, direction, now), kind=kind, category_key=self.key, direction=direction,
            run_id=self.run_id, planned_at=now, undo_of=undo_of, c2_read_run_id=c2_run, c2_read_at=c2_at,
            hector_read_run_id=hector_run, hector_read_at=hector_at, linked=summary.linked, risky=summary.risky,
            guard_refusal=guard.refusal(summary), unchanged=changes.unchanged,
        )

    def latest_reads(self) -> dict[str, tuple[str | None, datetime]]:
        """Per system, the run and time of the category's last stored read."""
        return {s: (r.get("run_id"), r["read_at"]) for s, r in self.reads.items()}  # type: ignore[misc]

    def chosen_plan(self, direction: Direction, plan_id: str | None) -> Plan:
        """The plan a writeback applies: the one named, else the category's latest sync plan."""
        book = PlanBook(self.store)
        plan = book.get(plan_id) if plan_id else book.latest(self.key, direction)
        if plan is None:
            raise UnknownPlan(f"category '{self.key}' has no plan toward {SYSTEM_NAMES[direction.target]} yet; "
                              "materialize its change set (or the whole chain) first")
        if (plan.category_key, plan.direction) != (self.key, direction):
            raise UnknownPlan(f"plan {plan.plan_id} is for category '{plan.category_key}' "
                              f"({plan.direction.value}), not '{self.key}' ({direction.value})")
        return plan

    def summary(self, direction: Direction, changes: ChangeSet) -> Summary:
        """The change set per item, weighed by the guard against the category's ACTIVE linked
        targets (max_change_fraction is a share of those, not of items already retired):
        toward Hector the assets holding a c2 ref and not retired; toward C2 ITSM the CIs, as
        last listed, paired to an asset (its c2 ref or our link) and not retired."""
        if direction is TO_HECTOR:
            sql = ("SELECT count(*) FROM hector_asset WHERE category_key = ? AND c2_ref IS NOT NULL "
                   "AND status IS DISTINCT FROM 'retired'")
            params = [self.key]
        else:
            sql = """
                WITH ci AS (
                    SELECT ci_id, status FROM c2_ci WHERE category_key = ?
                    QUALIFY row_number() OVER (PARTITION BY ci_id ORDER BY modified_at DESC NULLS LAST, version DESC) = 1
                )
                SELECT count(*) FROM ci
                WHERE status IS DISTINCT FROM 'retired'
                  AND (ci_id IN (SELECT c2_ref FROM hector_asset WHERE category_key = ? AND c2_ref IS NOT NULL)
                       OR ci_id IN (SELECT ci_id FROM link WHERE category_key = ?))
            """
            params = [self.key] * 3
        linked = self.store.query(sql, params).item()
        return summarize(changes, linked=int(linked or 0), direction=direction)

    def repeated_ci_ids(self) -> int:
        return int(self.store.query(
            "SELECT count(*) - count(DISTINCT ci_id) FROM c2_ci WHERE category_key = ?", [self.key]
        ).item())

    def apply(
        self, direction: Direction, *, plan_id: str | None = None, allow_stale_plan: bool = False,
        allow_large_change: bool = False,
    ) -> Applied:
        """Send what is left of a plan (the latest sync plan unless `plan_id` names one).

        A plan with nothing left writes nothing and says who finished it; a stale plan is
        refused (StalePlan) unless `allow_stale_plan`; so is one the guard held back when it was
        made (GuardRefused), unless `allow_large_change`.
        """
        book = PlanBook(self.store)
        with self.store.connect():  # what is asked before the first call, in one hold of the file
            plan = self.chosen_plan(direction, plan_id)
            todo = book.open_rows(plan)
            if todo.is_empty():
                book.check_current(plan)  # UnknownPlan once a newer plan has replaced its rows
                idle = (f"plan {plan.plan_id} was applied by run {plan.finished_by} at {plan.finished_at:%Y-%m-%d %H:%M:%S} UTC; "
                        "nothing is left to send" if plan.finished_at else f"plan {plan.plan_id} has nothing to send")
                return Applied(book.finish(plan, self.run_id), Counter(), {}, idle)
            stale = plan.staleness(datetime.now(UTC), self.config.max_plan_age, self.latest_reads(),
                                   book.written_since_reads(plan))
        requesting = todo.filter(pl.col("action").is_in(REQUESTING))
        if requesting.height and requesting["method"].null_count() == requesting.height:
            raise UnknownPlan(f"plan {plan.plan_id} was computed by an earlier hector_sync, before change rows carried "
                              "their requests; nothing was written: plan again")
        if stale and not allow_stale_plan:
            raise StalePlan(f"category '{self.key}': {stale}. Nothing was written. For a fresh plan, run the whole "
                            "chain for this category (its job, or hector-sync plan and then apply); or, once you have "
                            "checked this one, let it through with allow_stale_plan (hector-sync apply --allow-stale-plan).")
        if plan.guard_refusal and not allow_large_change:
            raise GuardRefused(
                f"category '{self.key}' ({direction.value}): {plan.guard_refusal}. "
                "Rerun with --allow-large-change to let it through."
            )
        common = {"store": self.store, "plan": self.reconciler.plan, "applying": plan, "run_id": self.run_id, "log": self.log}
        with self.c2.stats.counting() as c2_calls, self.hector.stats.counting() as hector_calls:
            if direction is TO_HECTOR:
                writer: HectorWriteback | C2Writeback = HectorWriteback(hector=self.hector, resolved=self.resolved, **common)
            else:
                writer = C2Writeback(c2=self.c2, hector=self.hector, resolved=self.resolved, **common)
            writer.run(todo)
        calls = {f"c2_{k}": v for k, v in c2_calls.items()} | {f"hector_{k}": v for k, v in hector_calls.items()}
        with self.store.connect():
            if book.open_rows(plan).is_empty():
                plan = book.finish(plan, self.run_id)
        return Applied(plan, writer.outcomes, calls)


__all__ = ["Applied", "CategorySync", "GuardRefused", "MappingInvalid", "StalePlan", "StoredCategory",
           "UnknownPlan", "full_read_day", "open_clients"]
