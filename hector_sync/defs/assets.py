"""The sync as software-defined assets, one partition per category, left to right as it runs:

C2 CMDB snapshot → desired Hector models → Hector change set → Hector writeback, with the Hector
inventory snapshot feeding the change set. Each asset runs one step of `CategorySync`, which
knows nothing of Dagster; `hector-sync plan` runs the same steps.
"""

import time
from typing import cast

import dagster as dg
import polars as pl

from hector_sync.defs.checks import CHANGE_SET_CHECKS, evaluate_change_set
from hector_sync.defs.resources import StoreResource, SyncConfigResource
from hector_sync.reconcile.changes import ACTIONS
from hector_sync.snapshot import Snapshot
from hector_sync.sync import CategorySync, GuardRefused, MappingInvalid, ReadMode

OWNERS = ["team:it-ops"]
READ_TAG = "hector_sync/read"  # full | incremental; absent: full on full_sync_weekday only
ALLOW_LARGE_CHANGE_TAG = "hector_sync/allow_large_change"
PREVIEW_ROWS = 20


def markdown_table(frame: pl.DataFrame, limit: int = PREVIEW_ROWS) -> str:
    if frame.is_empty():
        return "_nothing_"
    head = frame.head(limit)
    cells = [[("" if v is None else str(v)).replace("|", "\\|").replace("\n", " ") for v in row] for row in head.rows()]
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    if frame.height > limit:
        lines.append(f"\n… and {frame.height - limit} more rows")
    return "\n".join(lines)


def category_sync(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource) -> CategorySync:
    config = settings.load()
    return CategorySync(config, config.category(context.partition_key), store.store(), context.log.info, context.run.run_id)


def read_mode(context: dg.AssetExecutionContext) -> ReadMode:
    return cast(ReadMode, context.run.tags.get(READ_TAG, "auto"))


def skipped(sync: CategorySync) -> dg.MaterializeResult:
    message = f"direction is {sync.category.direction.value}: this job syncs c2_to_hector categories only"
    sync.log(f"{sync.key}: {message}")
    return dg.MaterializeResult(metadata={"skipped": message})


def start(
    context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource
) -> CategorySync | dg.MaterializeResult:
    """The partition's sync with its names resolved, or the result saying it has nothing to do."""
    sync = category_sync(context, settings, store)
    if not sync.flows_to_hector:
        return skipped(sync)
    try:
        sync.resolved
    except MappingInvalid as invalid:
        raise dg.Failure(description=str(invalid)) from None
    return sync


def snapshot_metadata(snap: Snapshot, calls: dict[str, int]) -> dict[str, object]:
    return {
        "dagster/row_count": snap.table_rows, "read": snap.read_kind, "rows_read": snap.rows_read,
        "pages": snap.pages, "duration_s": round(snap.seconds, 2), **{f"api_{k}": v for k, v in calls.items()},
    }


@dg.asset(
    group_name="c2_itsm", kinds={"duckdb", "polars"}, owners=OWNERS,
    description="The category's CIs as C2 ITSM lists them, fields resolved from ids to names "
    "(DuckDB table c2_ci). Full read on full_sync_weekday, else the CIs changed in the last 7 days.",
)
def c2_cmdb_snapshot(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource) -> dg.MaterializeResult:
    sync = start(context, settings, store)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    snap, calls = sync.snapshot_c2(read_mode(context))
    return dg.MaterializeResult(metadata=snapshot_metadata(snap, calls))


@dg.asset(
    group_name="hector", kinds={"duckdb", "polars"}, owners=OWNERS,
    description="The mapped Hector category's subcategories and assets (DuckDB tables "
    "hector_subcategory and hector_asset), read like the C2 snapshot.",
)
def hector_inventory_snapshot(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource) -> dg.MaterializeResult:
    sync = start(context, settings, store)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    models, assets, calls = sync.snapshot_hector(read_mode(context))
    return dg.MaterializeResult(metadata=snapshot_metadata(assets, calls) | {"subcategories": models.table_rows})


@dg.asset(
    deps=[c2_cmdb_snapshot], group_name="derived", kinds={"duckdb"}, owners=OWNERS,
    description="What Hector should hold: one subcategory per distinct maker/model/description and "
    "one asset per valid active CI (tables desired_model, desired_asset), with the CIs left out "
    "and their reasons beside them (rejected_ci).",
)
def desired_hector_models(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource) -> dg.MaterializeResult:
    sync = start(context, settings, store)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    started = time.monotonic()
    derived = sync.derive()
    rejected = sync.store.query("SELECT ci_id, field, value, reason FROM rejected_ci WHERE category_key = ?", [sync.key])
    disagreements = sync.store.query(
        "SELECT model_key, source_ci, disagreement FROM desired_model WHERE category_key = ? AND disagreement IS NOT NULL",
        [sync.key],
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": derived.assets, "models": derived.models, "rejected_cis": derived.rejected_cis,
            "rejected_preview": dg.MetadataValue.md(markdown_table(rejected)),
            "model_disagreements": dg.MetadataValue.md(markdown_table(disagreements)),
            "duration_s": round(time.monotonic() - started, 2),
        }
    )


@dg.asset(
    deps=[desired_hector_models, hector_inventory_snapshot], group_name="change_sets",
    kinds={"duckdb", "polars"}, owners=OWNERS, check_specs=CHANGE_SET_CHECKS,
    description="The planned changes to Hector, field by field with old → new and a reason: creates, "
    "updates, moves, links, retires, unchanged and skipped CIs (table change_set). Its checks must "
    "pass before the writeback runs.",
)
def hector_change_set(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource):
    sync = category_sync(context, settings, store)
    if not sync.flows_to_hector:
        yield skipped(sync)
        yield from evaluate_change_set(sync, None, None, allowed=True)
        return
    started = time.monotonic()
    problems = sync.problems()
    changes = pl.DataFrame(schema={"action": pl.Utf8, "item": pl.Utf8})
    if not problems:
        changes = sync.plan()
    summary = sync.summary(changes)
    shown = changes.filter(pl.col("action") != "unchanged").drop(
        "category_key", "direction", "target_version", "model_key", strict=False)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": changes.height,
            **{f"items_{a}": summary.counts[a] for a in ACTIONS},
            "changes_preview": dg.MetadataValue.md(markdown_table(shown)),
            "duration_s": round(time.monotonic() - started, 2),
        }
    )
    allowed = context.run.tags.get(ALLOW_LARGE_CHANGE_TAG) == "true"
    yield from evaluate_change_set(sync, problems, summary, allowed=allowed)


@dg.asset(
    deps=[hector_change_set], group_name="writeback", kinds={"python"}, owners=OWNERS,
    description="Applies the change set to Hector (subcategories before assets), records every "
    "outcome in change_history, and keeps the CI ↔ asset link locally and as the asset's external ref.",
)
def hector_writeback(context: dg.AssetExecutionContext, settings: SyncConfigResource, store: StoreResource) -> dg.MaterializeResult:
    sync = start(context, settings, store)
    if isinstance(sync, dg.MaterializeResult):
        return sync
    started = time.monotonic()
    try:
        outcomes, calls = sync.apply(allow_large_change=context.run.tags.get(ALLOW_LARGE_CHANGE_TAG) == "true")
    except GuardRefused as refused:
        raise dg.Failure(description=str(refused)) from None
    return dg.MaterializeResult(
        metadata={
            **{f"outcome_{k}": v for k, v in sorted(outcomes.items())},
            **{f"api_{k}": v for k, v in calls.items()},
            "duration_s": round(time.monotonic() - started, 2),
        }
    )


C2_TO_HECTOR_ASSETS = [c2_cmdb_snapshot, hector_inventory_snapshot, desired_hector_models, hector_change_set, hector_writeback]
