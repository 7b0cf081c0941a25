"""The Dagster instance that `hector-sync` runs in: `$DAGSTER_HOME`, else a `dagster/` folder next
to the DuckDB file, so that `hector-sync demo --ui` and `dagster dev` show its runs afterwards."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from filelock import FileLock
from watchdog.events import FileSystemEvent, PatternMatchingEventHandler
from watchdog.observers import Observer

if TYPE_CHECKING:
    from hector_sync.config import SyncConfig

EVENTS = "events"  # the event log's folder in the home
# The SQLite files of Dagster's default run and schedule storage, relative to the home. Not the
# event log: see PooledSqliteEventLogStorage, which keeps its own connections.
SQLITE_FILES = ("history/runs.db", "schedules/schedules.db")
LOCAL_INSTANCE = """\
# Written by hector-sync for a new DAGSTER_HOME; it is never rewritten, so edit it freely.
telemetry:
  enabled: false
# Every run's events in one SQLite file, event_log.db in the folder below, through connections
# kept open. Dagster's default keeps a database per run, created and migrated as the run starts,
# and opens a new connection for every event: together about 0.2 s of every category.
event_log_storage:
  module: hector_sync.instance
  class: PooledSqliteEventLogStorage
  config:
    base_dir: {events}
# Raw stdout/stderr of steps is not copied into files. What the sync reports goes through the
# event log (each step, log line, error and materialization); the default manager would start
# two `tail` processes per run to copy what is, from `hector-sync`, already in the terminal.
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def _sync_at_checkpoints(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    """SQLite's advice for a write-ahead log: a commit is not synced to disk on its own (FULL
    syncs some five times per event, 2 ms each here). A power cut can lose the last events
    stored; it cannot corrupt the file, and a crash of the process loses nothing."""
    dbapi_connection.execute("PRAGMA synchronous = NORMAL")


class _EventLogWatchdog(PatternMatchingEventHandler):
    """Tells the storage of a change to its file or to its write-ahead log, where each commit
    lands until a checkpoint copies it into the file."""

    def __init__(self, storage: PooledSqliteEventLogStorage) -> None:
        path = storage.get_db_path()
        super().__init__(patterns=[path, f"{path}-wal"])
        self._storage = storage

    def on_modified(self, event: FileSystemEvent) -> None:
        self._storage.on_modified()


class PooledSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """Dagster's one-file SQLite event log, its connections kept in a pool.

    The class it extends builds a SQLAlchemy engine, and opens and closes a connection, for each
    event it stores and each index it reads: some 150 times for the three categories of the
    demo, 2-3 ms each. The engine here is built once per process (a forked child builds its
    own, as SQLAlchemy asks); SQLite's write-ahead log lets the other processes (the UI, the
    daemon) use the file meanwhile.

    Dagster's UI follows a run by watching event_log.db itself change, and a write-ahead log
    only reaches that file at a checkpoint (every thousand pages, or when the last connection
    closes: with connections kept open none is ever the last). So the watch here also hears the
    write-ahead log change, and a run's steps show in the UI as they happen, without the cost of
    a checkpoint, and its syncs, on every commit."""

    _engine: sa.Engine | None = None
    _engine_pid = 0
    _building = threading.Lock()  # the UI stores and reads events from several threads at once

    def _pooled(self) -> sa.Engine:
        with self._building:
            if self._engine is None or self._engine_pid != os.getpid():
                # no cap on open connections (max_overflow=-1): a busy UI opens more, never waits for one
                self._engine = sa.create_engine(
                    self._conn_string, max_overflow=-1, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
                sa.event.listen(self._engine, "connect", _sync_at_checkpoints)
                self._engine_pid = os.getpid()
            return self._engine

    @contextmanager
    def _pooled_connection(self) -> Iterator[sa.Connection]:
        with self._pooled().connect() as conn, conn.begin():
            yield conn

    def run_connection(self, run_id: str | None) -> AbstractContextManager[sa.Connection]:
        return self._pooled_connection()

    def index_connection(self) -> AbstractContextManager[sa.Connection]:
        return self._pooled_connection()

    def watch(self, run_id: str, cursor: str | None, callback: Callable[..., object]) -> None:
        if not self._obs:
            self._obs = Observer()
            self._obs.start()
            self._obs.schedule(_EventLogWatchdog(self), self._base_dir, recursive=True)
        self._watchers[run_id][callback] = cursor

    def has_table(self, table_name: str) -> bool:
        with self._pooled().connect() as conn:
            return bool(conn.dialect.has_table(conn, table_name))

    def dispose(self) -> None:
        if self._engine is not None and self._engine_pid == os.getpid():
            self._engine.dispose()
        self._engine = None
        super().dispose()


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

    Dagster's run and schedule storage open and close a connection for each write. SQLite
    checkpoints and deletes a database's write-ahead log when its last connection closes, so
    without one connection of ours left open each of those writes would pay for that too. The
    connection only reads the schema once, and holds no lock. (The event log keeps connections
    of its own: `PooledSqliteEventLogStorage`.)
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
