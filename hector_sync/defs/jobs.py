"""One job per direction; each run is one category partition.

A category runs in the job of its direction: `c2_to_hector` and `hector_to_c2` materialize one
writeback, `per_field` both (its snapshots are read once for the two change sets). Runs execute
in process: the steps of one category are sequential anyway, and it spares a process per step.

Every run carries a tag per external system it calls (`SYSTEM_TAGS`): the production instance
(deploy/dagster.yaml) caps, per tag, how many runs may talk to C2 ITSM or to Hector at once.
"""

from __future__ import annotations

import dagster as dg

from hector_sync.config import Direction
from hector_sync.defs.assets import ALL_ASSETS, TO_C2_ASSETS, TO_HECTOR_ASSETS

JOB_OF: dict[Direction, str] = {
    Direction.C2_TO_HECTOR: "c2_to_hector_sync",
    Direction.HECTOR_TO_C2: "hector_to_c2_sync",
    Direction.PER_FIELD: "per_field_sync",
}
C2_TO_HECTOR_JOB = JOB_OF[Direction.C2_TO_HECTOR]

# Run tags naming the external systems a run calls. Every job reads both snapshots, so every run
# carries both; deploy/dagster.yaml limits concurrent runs by these keys (tag_concurrency_limits).
C2_ITSM_TAG = "hector_sync/c2_itsm"
HECTOR_TAG = "hector_sync/hector"
SYSTEM_TAGS: dict[str, str] = {C2_ITSM_TAG: "true", HECTOR_TAG: "true"}

SELECTION = {
    Direction.C2_TO_HECTOR: (TO_HECTOR_ASSETS, "C2 ITSM → Hector for one category: snapshots, change set, writeback."),
    Direction.HECTOR_TO_C2: (TO_C2_ASSETS, "Hector → C2 ITSM for one category: snapshots, change set, writeback."),
    Direction.PER_FIELD: (ALL_ASSETS, "Both ways for one per_field category, each field from the side that owns it."),
}


def build_jobs() -> list[dg.JobDefinition]:
    return [
        dg.define_asset_job(
            JOB_OF[direction], selection=dg.AssetSelection.assets(*assets),
            executor_def=dg.in_process_executor, description=description, tags=SYSTEM_TAGS,
        )
        for direction, (assets, description) in SELECTION.items()
    ]
