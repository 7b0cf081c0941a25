"""The Dagster instance that `hector-sync` runs in: `$DAGSTER_HOME`, else a `dagster/` folder next
to the DuckDB file, so that `hector-sync demo --ui` and `dagster dev` show its runs afterwards."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from filelock import FileLock

if TYPE_CHECKING:
    from hector_sync.config import SyncConfig

EVENTS = "events"  # the event log's folder in the home
# The SQLite files of the default storage, with LOCAL_INSTANCE's event log: relative to the home.
SQLITE_FILES = ("history/runs.db", "schedules/schedules.db", f"{EVENTS}/event_log.db")
LOCAL_INSTANCE = """\
# Written by hector-sync for a new DAGSTER_HOME; it is never rewritten, so edit it freely.
telemetry:
  enabled: false
# Every run's events in one SQLite file, event_log.db in the folder below. Dagster's default
# keeps a database per run, created and migrated as the run starts: about 0.1 s of every category.
event_log_storage:
  module: dagster._core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir: {events}
# Raw stdout/stderr of steps is not copied into files. What the sync reports goes through the
# event log (each step, log line, error and materialization); the default manager would start
# two `tail` processes per run to copy what is, from `hector-sync`, already in the terminal.
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def local_instance(home: Path) -> Path:
    """`home` as a DAGSTER_HOME, given `LOCAL_INSTANCE` unless it already has a dagster.yaml.

    The event log gets a folder of its own: Dagster watches that folder and every folder below it
    for the UI's live view of a run, so it should hold nothing else."""
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(LOCAL_INSTANCE.format(events=json.dumps(str(home.resolve() / EVENTS))))
    return home


def dagster_home(config: SyncConfig) -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path(config.storage.duckdb_path).parent / "dagster")
        os.environ["DAGSTER_HOME"] = home
    return local_instance(Path(home))


@contextmanager
def open_instance(home: Path) -> Iterator[dg.DagsterInstance]:
    """The instance at `home`, its SQLite storage created by one process at a time, and its
    SQLite files kept open until the block ends.

    Two `hector-sync sync` started together on a fresh DAGSTER_HOME would otherwise both create
    the schemas and stamp two alembic heads, which breaks the folder for every later run.

    Dagster opens and closes a connection for each event it stores, some 50 per run. SQLite
    checkpoints and deletes a database's write-ahead log when its last connection closes, so
    without one connection of ours left open each of those events would pay for that too
    (about 70 ms per run). The connection only reads the schema once, and holds no lock.
    """
    with FileLock(str(home / ".hector-sync-instance.lock"), timeout=120):
        instance = dg.DagsterInstance.get()
    with instance, ExitStack() as held:
        for file in (home / name for name in SQLITE_FILES):
            if file.exists():
                con = held.enter_context(closing(sqlite3.connect(file)))
                with suppress(sqlite3.Error):  # only a speed-up: a file busy this instant is left alone
                    con.execute("SELECT count(*) FROM sqlite_master").fetchall()
        yield instance
