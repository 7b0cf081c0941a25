"""One writeback job per direction; each run is one category partition.

Runs execute in process: the steps of one category are sequential anyway (each waits on the
last), and it spares a process start per step.
"""

from __future__ import annotations

import dagster as dg

from hector_sync.defs.assets import C2_TO_HECTOR_ASSETS

C2_TO_HECTOR_JOB = "c2_to_hector_sync"


def build_jobs() -> list[dg.JobDefinition]:
    return [
        dg.define_asset_job(
            C2_TO_HECTOR_JOB,
            selection=dg.AssetSelection.assets(*C2_TO_HECTOR_ASSETS),
            executor_def=dg.in_process_executor,
            description="C2 ITSM → Hector for one category: snapshots, change set, writeback.",
        )
    ]
