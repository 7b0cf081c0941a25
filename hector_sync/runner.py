"""Runs categories through Dagster from the command line, recorded in a persistent instance.

Without a daemon nothing would e-mail a failure, so a failed run here sends the same e-mail the
run-failure sensor sends. Runs land in `$DAGSTER_HOME`, else in a `dagster/` folder next to the
DuckDB file, so `hector-sync demo --ui` and `dagster dev` show them afterwards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from filelock import FileLock

from hector_sync.config import SyncConfig
from hector_sync.defs.assets import ALLOW_LARGE_CHANGE_TAG, READ_TAG
from hector_sync.defs.jobs import JOB_OF
from hector_sync.definitions import build_definitions
from hector_sync.notify import failure_report, send_report
from hector_sync.store import SUMMARY_COLUMNS, Store
from hector_sync.sync import FLOWS

QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def dagster_home(config: SyncConfig) -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path(config.storage.duckdb_path).parent / "dagster")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    settings = Path(home) / "dagster.yaml"
    if not settings.exists():
        settings.write_text("telemetry:\n  enabled: false\n")
    return Path(home)


def open_instance(home: Path) -> dg.DagsterInstance:
    """The instance at `home`, its SQLite storage created by one process at a time.

    Two `hector-sync sync` started together on a fresh DAGSTER_HOME would otherwise both create
    the schemas and stamp two alembic heads, which breaks the folder for every later run.
    """
    with FileLock(str(home / ".hector-sync-instance.lock"), timeout=120):
        return dg.DagsterInstance.get()


@dataclass
class CategoryResult:
    key: str
    direction: str
    run_id: str
    success: bool
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def run_sync(
    config: SyncConfig, config_path: str | None, keys: list[str], *, full: bool = False,
    allow_large_change: bool = False,
) -> list[CategoryResult]:
    """One Dagster run per category, in its direction's job; a failed category does not stop the others."""
    home = dagster_home(config)
    defs = build_definitions(config_path)
    store = Store(Path(config.storage.duckdb_path))
    tags = {READ_TAG: "full"} if full else {}
    if allow_large_change:
        tags[ALLOW_LARGE_CHANGE_TAG] = "true"
    results = []
    with open_instance(home) as instance:
        for key in keys:
            direction = config.category(key).direction
            if direction not in JOB_OF:
                results.append(CategoryResult(key, direction.value, "", True, dict.fromkeys(SUMMARY_COLUMNS, 0)))
                continue
            job = defs.resolve_job_def(JOB_OF[direction])
            outcome = job.execute_in_process(
                partition_key=key, instance=instance, tags=tags, raise_on_error=False, run_config=QUIET
            )
            per_direction = [
                CategoryResult(key, way.value, outcome.run_id, outcome.success, store.outcome_counts(key, way.value, outcome.run_id))
                for way in FLOWS[direction]
            ]
            if not outcome.success:
                report = failure_report(instance, outcome.run_id)
                error = "; ".join(report.errors)
                try:
                    send_report(report, config)
                except OSError as unsent:
                    error += f" (the failure e-mail to {config.notify_on_error} could not be sent: {unsent})"
                per_direction[-1].error = error
            results += per_direction
    return results
