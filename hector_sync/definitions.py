"""The Dagster code location: `dagster dev -w workspace.yaml` and `hector-sync sync` load this.

Partitions, jobs and the schedule follow the configuration file ($HECTOR_SYNC_CONFIG, else the
demo), so the UI and the command line always see the same categories. The freshness checks and
the stale-sync sensor weigh time by `clock` (tests move it).
"""

from __future__ import annotations

import os

import dagster as dg

from hector_sync.config import CONFIG_ENV_VAR, load_config
from hector_sync.defs.assets import ALL_ASSETS
from hector_sync.defs.freshness import Clock, build_freshness, utc_now
from hector_sync.defs.jobs import build_jobs
from hector_sync.defs.partitions import category_partitions
from hector_sync.defs.resources import build_resources
from hector_sync.defs.schedules import build_schedules
from hector_sync.defs.sensors import email_on_sync_failure


def build_definitions(config_path: str | None = None, *, clock: Clock = utc_now) -> dg.Definitions:
    path = config_path or os.environ.get(CONFIG_ENV_VAR) or None
    config = load_config(path)
    partitions = category_partitions(config)
    assets = [a.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=partitions)) for a in ALL_ASSETS]
    freshness_checks, stale_sync_sensor = build_freshness(config, clock)
    return dg.Definitions(
        assets=assets,
        asset_checks=freshness_checks,
        jobs=build_jobs(partitions),
        schedules=build_schedules(config),
        sensors=[email_on_sync_failure, stale_sync_sensor],
        resources=build_resources(path),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
