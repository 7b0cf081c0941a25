"""The sync as software-defined assets, one partition per category, left to right as it runs:

                    ┌► C2 CMDB snapshot ──► desired Hector models ──► Hector change set ──► Hector writeback
                    │                  ╲                          ╱
    category catalog┤                   ╳ (each change set reads both snapshots)
                    │                  ╱                          ╲
                    └► Hector snapshot ──► desired C2 CIs ────────► C2 change set ──────► C2 writeback

The catalog resolves the category's names once per run; the snapshots read with it and every
later step works from the resolution its snapshots used (`CategorySync.catalog`).

Each asset runs one step of `CategorySync`, which knows nothing of Dagster; `hector-sync plan`
materializes these same assets up to the change sets (defs/jobs.planning_selection). A category materializes only the steps of its direction (per_field: both);
the others record that they had nothing to do. How their metadata reads in the UI (the previews
as tables) is defs/metadata.py's.
"""

import time
from collections.abc import Iterator
from typing import cast

import dagster as dg
import polars as pl
from pydantic import Field

from hector_sync.c2 import C2Client
from hector_sync.config import TO_C2, TO_HECTOR, Direction
from hector_sync.defs.checks import change_set_checks, evaluate_change_set
from hector_sync.defs.metadata import (
    change_table, partition_links, plan_metadata, preview_table, skipped_table, snapshot_metadata,
)
from hector_sync.defs.resources import StoreResource, SyncConfigResource
from hector_sync.defs.tags import ALLOW_LARGE_CHANGE_TAG, READ_TAG
from hector_sync.reconcile.changes import CHANGE_SCHEMA, item_counts
from hector_sync.hector import HectorClient
from hector_sync.held import HELD_SCHEMA, held_items
from hector_sync.plans import PlanBook
from hector_sync.state import SyncState
from hector_sync.sync import CategorySync, GuardRefused, MappingInvalid, ReadMode, StalePlan, UnknownPlan

OWNERS = ["team:it-ops"]


def category_sync(
    context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource, c2: C2Client, hector: HectorClient,
) -> CategorySync:
    config = settings.load()
    return CategorySync(config, config.category(context.partition_key), store.store(), c2, hector, context.log.info,
                        context.run.run_id)


def read_mode(context: dg.AssetExecutionContext) -> ReadMode:
    return cast(ReadMode, context.run.tags.get(READ_TAG, "auto"))


def large_change_allowed(context: dg.AssetExecutionContext) -> bool:
    return context.run.tags.get(ALLOW_LARGE_CHANGE_TAG) == "true"


def skipped(sync: CategorySync, direction: Direction | None) -> dg.MaterializeResult:
    way = f"does not sync {direction.value}" if direction else "syncs nothing"
    message = f"direction is {sync.category.direction.value}: this category {way}"
    sync.log(f"{sync.key}: {message}")
    return dg.MaterializeResult(metadata={"skipped": message})


def start(
    context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource, c2: C2Client,
    hector: HectorClient, direction: Direction | None = None, *, reading: bool = False,
) -> CategorySync | dg.MaterializeResult:
    """The partition's sync with its stored resolution at hand (the latest when `reading`,
    else the one its snapshots read with), or the result saying it has nothing to do."""
    sync = category_sync(context, settings, store, c2, hector)
    if not sync.flows(direction):
        return skipped(sync, direction)
    try:
        with sync.store.connect():  # its reads and resolution in one hold of the file
            sync.latest_catalog if reading else sync.catalog
    except MappingInvalid as invalid:
        raise dg.Failure(description=str(invalid)) from None
    return sync


@dg.asset(
    group_name="catalog", kinds={"duckdb"}, owners=OWNERS,
    description="The category's configured names resolved against both live systems: CMDB, category and "
    "field ids and types in C2 ITSM, category, stockroom and attributes in Hector (DuckDB table "
    "category_catalog). Both snapshots, and every step after them, use this resolution.",
)
def category_catalog(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource,
                     c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient]) -> dg.MaterializeResult:
    sync = category_sync(context, settings, store, c2, hector)
    if not sync.flows():
        return skipped(sync, None)
    try:
        catalog_id, resolved = sync.resolve_catalog()
    except MappingInvalid as invalid:
        raise dg.Failure(description=str(invalid)) from None
    fields = pl.DataFrame(
        [(name, f.id, f.type) for name, f in sorted(resolved.c2_fields.items())]
        + [(f"{scope} attribute {name}", resolved.hector_name(scope, name), kind)  # type: ignore[arg-type]
           for (scope, name), kind in sorted(resolved.attribute_kinds.items())],
        schema=["name", "id_or_spelling", "type"], orient="row")
    return dg.MaterializeResult(metadata={
        "catalog_id": catalog_id, "cmdb_id": resolved.cmdb_id, "c2_category_id": resolved.c2_category_id,
        "hector_category_id": resolved.hector_category_id, "stockroom_id": resolved.stockroom_id,
        "c2_fields": len(resolved.c2_fields), **preview_table(fields, limit=60).metadata("resolved"),
    })


@dg.asset(
    deps=[category_catalog], group_name="c2_itsm", kinds={"duckdb", "polars"}, owners=OWNERS,
    description="The category's CIs as C2 ITSM lists them, fields resolved from ids to names "
    "(DuckDB table c2_ci). Full read on full_sync_weekday, else the CIs changed in the last 7 days.",
)
def c2_cmdb_snapshot(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource,
                     c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient]) -> dg.MaterializeResult:
    sync = start(context, settings, store, c2, hector, reading=True)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    snap, calls = sync.snapshot_c2(read_mode(context))
    return dg.MaterializeResult(metadata=snapshot_metadata(snap, calls))


@dg.asset(
    deps=[category_catalog], group_name="hector", kinds={"duckdb", "polars"}, owners=OWNERS,
    description="The mapped Hector category's subcategories and assets (DuckDB tables "
    "hector_subcategory and hector_asset), read like the C2 snapshot.",
)
def hector_inventory_snapshot(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource,
                     c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient]) -> dg.MaterializeResult:
    sync = start(context, settings, store, c2, hector, reading=True)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    models, assets, calls = sync.snapshot_hector(read_mode(context))
    return dg.MaterializeResult(metadata=snapshot_metadata(assets, calls) | {"subcategories": models.table_rows})


def derived_metadata(sync: CategorySync, direction: Direction, started: float) -> dict[str, object]:
    derived = sync.derive(direction)
    table, key = ("rejected_ci", "ci_id") if direction is TO_HECTOR else ("rejected_asset", "asset_id")
    rejected = sync.store.query(f"SELECT {key}, field, value, reason FROM {table} WHERE category_key = ?", [sync.key])
    models = {"models": derived.models} if direction is TO_HECTOR else {}
    return models | {
        "dagster/row_count": derived.items, f"rejected_{key.removesuffix('_id')}s": derived.rejected,
        **preview_table(rejected).metadata("rejected_preview"),
        "duration_s": round(time.monotonic() - started, 2),
    }


@dg.asset(
    deps=[c2_cmdb_snapshot], group_name="derived", kinds={"duckdb"}, owners=OWNERS,
    description="What Hector should hold: one subcategory per distinct maker/model/description and "
    "one asset per valid active CI (tables desired_model, desired_asset), with the CIs left out "
    "and their reasons beside them (rejected_ci).",
)
def desired_hector_models(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource,
                     c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient]) -> dg.MaterializeResult:
    sync = start(context, settings, store, c2, hector, TO_HECTOR)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    metadata = derived_metadata(sync, TO_HECTOR, time.monotonic())
    disagreements = sync.store.query(
        "SELECT model_key, source_ci, disagreement FROM desired_model WHERE category_key = ? AND disagreement IS NOT NULL",
        [sync.key],
    )
    return dg.MaterializeResult(metadata=metadata | preview_table(disagreements).metadata("model_disagreements"))


@dg.asset(
    deps=[hector_inventory_snapshot], group_name="derived", kinds={"duckdb"}, owners=OWNERS,
    description="What C2 ITSM should hold: one CI per active, valid Hector asset, its model fields "
    "taken from the asset's subcategory (table desired_ci), with the assets left out and their "
    "reasons beside them (rejected_asset).",
)
def desired_c2_cis(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource,
                     c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient]) -> dg.MaterializeResult:
    sync = start(context, settings, store, c2, hector, TO_C2)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    return dg.MaterializeResult(metadata=derived_metadata(sync, TO_C2, time.monotonic()))


def change_set_asset(name: str, direction: Direction, deps: list[dg.AssetsDefinition], what: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name, deps=deps, group_name="change_sets", kinds={"duckdb", "polars"}, owners=OWNERS,
        check_specs=change_set_checks(name, direction),
        description=f"The planned changes {direction.arrow}, field by field with old → new and a reason: "
        f"{what} and skipped items (table change_set); items_unchanged counts the pairs that already "
        "agree. Under per_field, drift (a field written on the side that does not own it) shows as "
        "revert_drift. held_preview lists what "
        "waits for a person to pin the right pair (hector-sync held, link). Its checks must pass "
        "before the writeback runs.",
    )
    def _change_set(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource,
                    c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient]) -> Iterator:
        sync = category_sync(context, settings, store, c2, hector)
        if not sync.flows(direction):
            yield skipped(sync, direction)
            yield from evaluate_change_set(sync, direction, None, None, allowed=True)
            return
        started = time.monotonic()
        problems = sync.problems()
        changes = pl.DataFrame(schema=CHANGE_SCHEMA)  # nothing planned on a broken mapping
        held = pl.DataFrame(schema=HELD_SCHEMA)
        identity: dict[str, object] = {"plan_id": "none: the mapping is broken, so nothing was planned"}
        plan = None
        if not problems:
            with sync.store.connect():  # one hold of the file, not one per statement: no API call in it
                plan, changes = sync.plan(direction)
                identity = plan_metadata(plan) | {"catalog_id": sync.catalog[0]}
                held = held_items(sync.store, sync.reconciler.plan)
        writes = changes.filter(pl.col("action") != "skip")
        counts = item_counts(changes, direction, plan.unchanged or 0 if plan else 0)
        sync.log(f"{sync.key}: planned {direction.arrow}: " + (", ".join(f"{n} {a}" for a, n in counts.items() if n) or "nothing"))
        yield dg.MaterializeResult(
            metadata={
                **identity,
                "dagster/row_count": changes.height,
                **{f"items_{a}": n for a, n in counts.items()},
                **change_table(writes).metadata("changes_preview"),
                **skipped_table(changes).metadata("skipped_preview"),
                "held": held["held"].n_unique(),  # for a person to settle: hector-sync held, link
                **preview_table(held).metadata("held_preview"),
                **change_table(writes.filter(pl.col("action") == "revert_drift")).metadata("drift_preview"),
                "categories": partition_links(context),
                "duration_s": round(time.monotonic() - started, 2),
            }
        )
        yield from evaluate_change_set(sync, direction, problems, plan, allowed=large_change_allowed(context))

    return _change_set


class WritebackConfig(dg.Config):
    """What an operator may ask of one writeback run, in the launchpad or with --config-json."""

    plan_id: str | None = Field(
        None, description="Apply exactly this plan (as `hector-sync plan` printed it); default: the "
        "category's latest plan toward this system.")
    allow_stale_plan: bool = Field(
        False, description="Apply the plan even if it is older than max_plan_age or either system was "
        "read again since it was computed. Only after checking it.")


def writeback_asset(name: str, direction: Direction, change_set: dg.AssetsDefinition, what: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name, deps=[change_set], group_name="writeback", kinds={"python"}, owners=OWNERS,
        description=f"Applies the category's latest plan {direction.arrow} ({what}) at most once: only "
        "rows not yet done are sent, a plan older than max_plan_age or superseded by a newer read is "
        "refused. Records every outcome in change_history, and keeps the CI ↔ asset link locally and "
        "as the asset's external ref.",
    )
    def _writeback(
        context: dg.AssetExecutionContext, config: WritebackConfig, settings: SyncConfigResource, store: StoreResource,
        c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient],
    ) -> dg.MaterializeResult:
        sync = start(context, settings, store, c2, hector, direction)
        if isinstance(sync, dg.MaterializeResult):
            return sync
        started = time.monotonic()
        try:
            applied = sync.apply(direction, plan_id=config.plan_id, allow_stale_plan=config.allow_stale_plan,
                                 allow_large_change=large_change_allowed(context))
        except (GuardRefused, StalePlan, UnknownPlan) as refused:
            raise dg.Failure(description=str(refused)) from None
        with sync.store.connect():  # what the metadata shows of the run, in one hold of the file
            states = PlanBook(sync.store).state_counts(applied.plan)
            if not applied.idle:
                counts = SyncState(sync.store).outcome_counts(sync.key, direction.value, sync.run_id, applied.plan.plan_id)
                done = sync.store.query(
                    "SELECT action, item, target_id, field, old, new, outcome AS reason FROM change_history "
                    "WHERE run_id = ? AND category_key = ? AND direction = ? AND outcome NOT IN ('skipped', 'reported') "
                    "ORDER BY recorded_at, item, field", [sync.run_id, sync.key, direction.value])
        identity = plan_metadata(applied.plan) | {f"plan_{state}": n for state, n in sorted(states.items())}
        if applied.idle:
            sync.log(f"{sync.key}: wrote nothing {direction.arrow}: {applied.idle}")
            return dg.MaterializeResult(metadata={"wrote_nothing": applied.idle, **identity})
        sync.log(f"{sync.key}: wrote {direction.arrow} (plan {applied.plan.plan_id}): "
                 + (", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing"))
        return dg.MaterializeResult(
            metadata={  # what was written first: the run page shows only the first rows
                **{f"items_{k}": n for k, n in counts.items()},
                **identity,
                **{f"rows_{k}": v for k, v in sorted(applied.outcomes.items())},
                **change_table(done).metadata("changes_written"),
                "categories": partition_links(context),
                **{f"api_{k}": v for k, v in applied.calls.items()},
                "duration_s": round(time.monotonic() - started, 2),
            }
        )

    return _writeback


hector_change_set = change_set_asset(
    "hector_change_set", TO_HECTOR, [desired_hector_models, hector_inventory_snapshot],
    "subcategories and assets to create, links, updates, moves, retires")
c2_change_set = change_set_asset(
    "c2_change_set", TO_C2, [desired_c2_cis, c2_cmdb_snapshot], "CIs to create, links, updates, retires")
hector_writeback = writeback_asset(
    "hector_writeback", TO_HECTOR, hector_change_set, "subcategories before assets")
c2_writeback = writeback_asset(
    "c2_writeback", TO_C2, c2_change_set, "CIs created from assets get the external ref right after")

WRITEBACK_ASSET = {TO_HECTOR: hector_writeback.key.to_user_string(), TO_C2: c2_writeback.key.to_user_string()}
SNAPSHOTS = [category_catalog, c2_cmdb_snapshot, hector_inventory_snapshot]  # the reads, and what they read with
TO_HECTOR_ASSETS = [*SNAPSHOTS, desired_hector_models, hector_change_set, hector_writeback]
TO_C2_ASSETS = [*SNAPSHOTS, desired_c2_cis, c2_change_set, c2_writeback]
ALL_ASSETS = [*SNAPSHOTS, desired_hector_models, desired_c2_cis, hector_change_set, c2_change_set,
              hector_writeback, c2_writeback]
