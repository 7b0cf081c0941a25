"""One job per direction, and the undo job; each run is one category partition.

A category runs in the job of its direction: `c2_to_hector` and `hector_to_c2` materialize one
writeback, `per_field` both (its snapshots are read once for the two change sets). Runs execute
in process: the steps of one category are sequential anyway, and it spares a process per step.

Every run carries a tag per external system it calls (`SYSTEM_TAGS`, defs/tags.py): the
production instance (deploy/dagster.yaml) caps, per tag, how many runs may talk to C2 ITSM or to
Hector at once.
"""


import dagster as dg
import polars as pl
from pydantic import Field

from hector_sync.c2 import C2Client
from hector_sync.config import Direction
from hector_sync.defs.assets import (
    ALL_ASSETS, TO_C2_ASSETS, TO_HECTOR_ASSETS, WRITEBACK_ASSET, category_sync, large_change_allowed,
)
from hector_sync.defs.metadata import change_table, plan_metadata
from hector_sync.defs.resources import StoreResource, SyncConfigResource
from hector_sync.defs.tags import SYSTEM_TAGS
from hector_sync.hector import HectorClient
from hector_sync.plans import PlanBook
from hector_sync.sync import GuardRefused, MappingInvalid, StalePlan

JOB_OF: dict[Direction, str] = {
    Direction.C2_TO_HECTOR: "c2_to_hector_sync",
    Direction.HECTOR_TO_C2: "hector_to_c2_sync",
    Direction.PER_FIELD: "per_field_sync",
}
C2_TO_HECTOR_JOB = JOB_OF[Direction.C2_TO_HECTOR]
UNDO_JOB = "undo_run"

SELECTION = {
    Direction.C2_TO_HECTOR: (TO_HECTOR_ASSETS, "C2 ITSM → Hector for one category: snapshots, change set, writeback."),
    Direction.HECTOR_TO_C2: (TO_C2_ASSETS, "Hector → C2 ITSM for one category: snapshots, change set, writeback."),
    Direction.PER_FIELD: (ALL_ASSETS, "Both ways for one per_field category, each field from the side that owns it."),
}


def planning_selection(direction: Direction) -> list[dg.AssetKey]:
    """The assets of the direction's job up to its change sets and their checks: what
    `hector-sync plan` runs, so a plan takes exactly the steps a sync takes before it writes."""
    writebacks = set(WRITEBACK_ASSET.values())
    assets, _ = SELECTION[direction]
    return [a.key for a in assets if a.key.to_user_string() not in writebacks]


class UndoConfig(dg.Config):
    """The launchpad of `undo_run`: which run to take back, and whether to apply or only show."""

    run_id: str = Field(description="The run whose writes to take back (its id, from the Runs page or the history).")
    apply: bool = Field(False, description="Apply the inverse plan. Without it the run only computes and shows it "
                        "on the category's writeback partition.")


@dg.op(description="Reads both systems afresh and builds the inverse plan of what run_id applied in this category: "
       "old values back, moves back, retired items reactivated, created items retired (never deleted); items "
       "changed since are left alone as conflicts. With apply: true it is applied, under the guard and If-Match.")
def undo_category(context: dg.OpExecutionContext, config: UndoConfig, settings: SyncConfigResource,
                  store: StoreResource, c2: dg.ResourceParam[C2Client], hector: dg.ResourceParam[HectorClient]) -> None:
    sync = category_sync(context, settings, store, c2, hector)  # type: ignore[arg-type]
    directions = PlanBook(sync.store).applied_by(config.run_id).get(sync.key)
    if not directions:
        raise dg.Failure(description=f"run {config.run_id} applied nothing in category '{sync.key}'; nothing to undo")
    try:
        sync.resolve_catalog()
    except MappingInvalid as invalid:
        raise dg.Failure(description=str(invalid)) from None
    sync.snapshot_c2("full")
    sync.snapshot_hector("full")
    for direction in directions:
        plan, changes = sync.plan_undo(direction, config.run_id)
        metadata = plan_metadata(plan) | change_table(changes.filter(pl.col("action") != "skip")).metadata("undo_preview")
        if config.apply:
            try:
                applied = sync.apply(direction, plan_id=plan.plan_id, allow_large_change=large_change_allowed(context))  # type: ignore[arg-type]
            except (GuardRefused, StalePlan) as refused:
                raise dg.Failure(description=str(refused)) from None
            metadata |= {f"rows_{k}": v for k, v in sorted(applied.outcomes.items())}
        else:
            metadata["wrote_nothing"] = "shown only: launch again with apply: true to apply it"
        context.log_event(dg.AssetObservation(asset_key=WRITEBACK_ASSET[direction], partition=sync.key, metadata=metadata))


def build_jobs(partitions: dg.PartitionsDefinition) -> list[dg.JobDefinition]:
    # The writebacks' checks weigh every category's last sync against the clock (defs/freshness.py):
    # the stale-sync sensor records them, and one category's run has nothing to add about the others.
    freshness = dg.AssetSelection.checks_for_assets(*WRITEBACK_ASSET.values())
    sync_jobs = [
        dg.define_asset_job(
            JOB_OF[direction], selection=dg.AssetSelection.assets(*assets) - freshness,
            executor_def=dg.in_process_executor, description=description, tags=SYSTEM_TAGS,
        )
        for direction, (assets, description) in SELECTION.items()
    ]

    @dg.job(name=UNDO_JOB, partitions_def=partitions, executor_def=dg.in_process_executor, tags=SYSTEM_TAGS,
            description="Takes back what one run applied in one category (hector-sync undo RUN_ID in the UI).")
    def undo_run() -> None:
        undo_category()

    return [*sync_jobs, undo_run]
