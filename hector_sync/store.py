"""The DuckDB file itself: schema, settings, short-lived locked connections, category locks and
snapshot swaps. What the sync asks of the file and notes in it is `hector_sync.state.SyncState`
(reads, resolutions, links, baseline, create journal, outcomes) and `hector_sync.plans.PlanBook`
(plans and their history).

DuckDB lets one process hold a file at a time, so every connection here is short-lived and
taken under a cross-process file lock: category runs, `plan` and the UI's ad-hoc runs queue on
the lock instead of failing on DuckDB's. No connection is ever held across an API call;
snapshots are staged as Parquet files while pages stream in (a read of one page stays a frame)
and swapped in one transaction.

A connection is a cursor of the process's in-memory DuckDB engine for the file (`Engines`),
with the file attached for as long as the block lasts: the file is held exactly as long as a
connection of its own would hold it, but the engine (15-20 ms to start: its functions, its
threads) starts once per process, not once per connection.

Schema (one table per concept, `category_key` on every row):

| table | what it holds |
| --- | --- |
| `c2_ci` | C2 snapshot: CIs with `fields` as a map of field name → value text |
| `hector_subcategory`, `hector_asset` | Hector snapshot of the mapped category; each asset with the digest of the values a sync writes to it (`written_digest`), computed once per version (`written_for`) |
| `category_catalog` | per category, each resolution of its configured names to both systems' ids, types and spellings |
| `snapshot_state` | per category and system: last read, full or incremental, row count, the resolution it read with |
| `desired_model`, `desired_asset`, `rejected_ci` | derived: what Hector should hold (`fields`: the values in the order of the category's mapped targets; `written_digest`: one hash of them, compared with the asset's), and why CIs were left out |
| `derive_state` | per category, the digest of the statements its desired rows toward Hector were derived by, and their counts: while these hold, only CIs whose listing changed are derived again |
| `derived_ci` | per category, a hash of each CI listing row the desired rows were derived from: what tells a changed CI from an unchanged one |
| `desired_ci`, `rejected_asset` | derived: what C2 ITSM should hold, and why assets were left out |
| `plan` | one row per plan: its id, kind (sync or undo), the run and reads it came from, when it was finished |
| `change_set` | the rows of the current plans, field by field, each with its state (see `hector_sync.plans`) and the request it makes (`method`, `target`, JSON `body`; see `hector_sync.reconcile.requests`) |
| `change_history` | append-only: every change applied or refused, with run, plan, outcome and time; an operator's pins (`hector-sync link`, `unlink`) with who (`operator`) |
| `link` | CI id ↔ Hector asset id, as last agreed, or as an operator pinned it (`hector-sync link`, `pinned_by`) until a sync writes it |
| `unlink` | pairs an operator unlinked whose asset still carries the CI's external ref: the next sync removes it |
| `baseline` | per_field: per linked pair and field, the value both sides last agreed on |
| `pending_create` | CIs about to be created from assets: how a rerun finds a CI whose answer was lost |
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
from filelock import FileLock, Timeout

LOCK_TIMEOUT_S = 900.0
CATEGORY_WAIT_S = 900.0


class CategoryBusy(Exception):
    """Another run (or `plan`) of the same category holds it; this one waited and gave up."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS c2_ci (
    category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, name VARCHAR, status VARCHAR,
    modified_at TIMESTAMPTZ, version BIGINT, fields MAP(VARCHAR, VARCHAR));
CREATE TABLE IF NOT EXISTS hector_subcategory (
    category_key VARCHAR NOT NULL, id BIGINT NOT NULL, category_id BIGINT, maker VARCHAR,
    model VARCHAR, description VARCHAR, note VARCHAR, price DOUBLE, weight DOUBLE,
    vendor_sku VARCHAR, attributes MAP(VARCHAR, VARCHAR), updated_at TIMESTAMPTZ, version BIGINT);
CREATE TABLE IF NOT EXISTS hector_asset (
    category_key VARCHAR NOT NULL, id BIGINT NOT NULL, category_id BIGINT, subcategory_id BIGINT,
    stockroom_id BIGINT, title VARCHAR, asset_tag VARCHAR, note VARCHAR, acquisition_date VARCHAR,
    assigned_date VARCHAR, return_date VARCHAR, maintenance_date VARCHAR, end_of_life_date VARCHAR,
    status VARCHAR, attributes MAP(VARCHAR, VARCHAR), c2_ref VARCHAR, external_refs VARCHAR,
    updated_at TIMESTAMPTZ, version BIGINT);
CREATE TABLE IF NOT EXISTS snapshot_state (
    category_key VARCHAR NOT NULL, system VARCHAR NOT NULL, read_kind VARCHAR NOT NULL,
    read_at TIMESTAMPTZ NOT NULL, run_id VARCHAR, row_count BIGINT, previous_row_count BIGINT,
    PRIMARY KEY (category_key, system));
CREATE TABLE IF NOT EXISTS desired_model (
    category_key VARCHAR NOT NULL, model_key VARCHAR NOT NULL, fields VARCHAR[],
    ci_count BIGINT, source_ci VARCHAR, disagreement VARCHAR);
CREATE TABLE IF NOT EXISTS desired_asset (
    category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, model_key VARCHAR NOT NULL,
    identify_value VARCHAR, modified_at TIMESTAMPTZ, fields VARCHAR[], model_fields VARCHAR[]);
CREATE TABLE IF NOT EXISTS rejected_ci (
    category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, field VARCHAR, value VARCHAR,
    reason VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS derive_state (
    category_key VARCHAR PRIMARY KEY, source VARCHAR NOT NULL, items BIGINT, rejected BIGINT, models BIGINT,
    rows BIGINT);
CREATE TABLE IF NOT EXISTS derived_ci (
    category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, row_hash UBIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS plan (
    plan_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, category_key VARCHAR NOT NULL,
    direction VARCHAR NOT NULL, run_id VARCHAR, planned_at TIMESTAMPTZ NOT NULL,
    c2_read_run_id VARCHAR, c2_read_at TIMESTAMPTZ, hector_read_run_id VARCHAR,
    hector_read_at TIMESTAMPTZ, undo_of VARCHAR, finished_by VARCHAR, finished_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS change_set (
    category_key VARCHAR NOT NULL, direction VARCHAR NOT NULL, action VARCHAR NOT NULL,
    item VARCHAR NOT NULL, target_id VARCHAR, target_version BIGINT, model_key VARCHAR,
    field VARCHAR, old VARCHAR, new VARCHAR, reason VARCHAR, planned_at TIMESTAMPTZ,
    run_id VARCHAR);
CREATE TABLE IF NOT EXISTS change_history (
    run_id VARCHAR, category_key VARCHAR NOT NULL, direction VARCHAR NOT NULL,
    action VARCHAR NOT NULL, item VARCHAR NOT NULL, target_id VARCHAR, field VARCHAR,
    old VARCHAR, new VARCHAR, outcome VARCHAR NOT NULL, message VARCHAR,
    recorded_at TIMESTAMPTZ NOT NULL);
-- Files written before plans had an identity gain the columns (their old rows have no plan).
ALTER TABLE change_set ADD COLUMN IF NOT EXISTS plan_id VARCHAR;
ALTER TABLE change_set ADD COLUMN IF NOT EXISTS state VARCHAR;
ALTER TABLE change_history ADD COLUMN IF NOT EXISTS plan_id VARCHAR;
ALTER TABLE plan ADD COLUMN IF NOT EXISTS linked BIGINT;
ALTER TABLE plan ADD COLUMN IF NOT EXISTS risky BIGINT;
ALTER TABLE plan ADD COLUMN IF NOT EXISTS guard_refusal VARCHAR;
ALTER TABLE plan ADD COLUMN IF NOT EXISTS unchanged BIGINT;
-- Files written before change rows carried their request gain it (their old rows have none).
ALTER TABLE change_set ADD COLUMN IF NOT EXISTS method VARCHAR;
ALTER TABLE change_set ADD COLUMN IF NOT EXISTS target VARCHAR;
ALTER TABLE change_set ADD COLUMN IF NOT EXISTS body VARCHAR;
CREATE TABLE IF NOT EXISTS link (
    category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, asset_id BIGINT NOT NULL,
    linked_at TIMESTAMPTZ NOT NULL, run_id VARCHAR, PRIMARY KEY (category_key, ci_id));
CREATE TABLE IF NOT EXISTS desired_ci (
    category_key VARCHAR NOT NULL, asset_id BIGINT NOT NULL, title VARCHAR, identify_value VARCHAR,
    updated_at TIMESTAMPTZ, fields MAP(VARCHAR, VARCHAR));
CREATE TABLE IF NOT EXISTS rejected_asset (
    category_key VARCHAR NOT NULL, asset_id BIGINT NOT NULL, field VARCHAR, value VARCHAR,
    reason VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS baseline (
    category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, asset_id BIGINT NOT NULL,
    field VARCHAR NOT NULL, value VARCHAR, agreed_at TIMESTAMPTZ NOT NULL, run_id VARCHAR,
    PRIMARY KEY (category_key, ci_id, field));
CREATE TABLE IF NOT EXISTS pending_create (
    category_key VARCHAR NOT NULL, asset_id BIGINT NOT NULL, name VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL, run_id VARCHAR, PRIMARY KEY (category_key, asset_id));
CREATE TABLE IF NOT EXISTS category_catalog (
    category_key VARCHAR NOT NULL, catalog_id VARCHAR NOT NULL, run_id VARCHAR, resolved_at TIMESTAMPTZ NOT NULL,
    mapping VARCHAR NOT NULL, resolution JSON NOT NULL, PRIMARY KEY (category_key, catalog_id));
ALTER TABLE snapshot_state ADD COLUMN IF NOT EXISTS catalog_id VARCHAR;
-- Who wrote a row by hand (hector-sync link, unlink): the OS user; a run's rows leave it NULL.
ALTER TABLE change_history ADD COLUMN IF NOT EXISTS operator VARCHAR;
ALTER TABLE link ADD COLUMN IF NOT EXISTS pinned_by VARCHAR;
-- Desired assets hold their model's values apart; an older file's rows have none, and are
-- derived again (derive's statements changed with them).
ALTER TABLE desired_asset ADD COLUMN IF NOT EXISTS model_fields VARCHAR[];
-- Each side's digest of the values a sync writes to Hector's assets (reconcile.normalize.written_digest):
-- a desired asset's is derived with it; an asset's is computed once per version (written_for).
ALTER TABLE desired_asset ADD COLUMN IF NOT EXISTS written_digest UBIGINT;
ALTER TABLE hector_asset ADD COLUMN IF NOT EXISTS written_digest UBIGINT;
ALTER TABLE hector_asset ADD COLUMN IF NOT EXISTS written_for UBIGINT;
CREATE TABLE IF NOT EXISTS unlink (
    category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, asset_id BIGINT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL, requested_by VARCHAR NOT NULL, PRIMARY KEY (category_key, asset_id));
"""

# Column order of the snapshot tables, so staged frames insert by name, never by position.
C2_CI_COLUMNS = ("ci_id", "name", "status", "modified_at", "version", "fields")
HECTOR_SUBCATEGORY_COLUMNS = (
    "id", "category_id", "maker", "model", "description", "note", "price", "weight",
    "vendor_sku", "attributes", "updated_at", "version",
)
HECTOR_ASSET_COLUMNS = (
    "id", "category_id", "subcategory_id", "stockroom_id", "title", "asset_tag", "note",
    "acquisition_date", "assigned_date", "return_date", "maintenance_date", "end_of_life_date",
    "status", "attributes", "c2_ref", "external_refs", "updated_at", "version",
)
HISTORY_SCHEMA = {
    **{c: pl.Utf8 for c in (
        "run_id", "plan_id", "category_key", "direction", "action", "item", "target_id", "field", "old",
        "new", "outcome", "message",
    )},
    "recorded_at": pl.Datetime("us", "UTC"),
}
HISTORY_COLUMNS = tuple(HISTORY_SCHEMA)


# DuckDB takes 80% of RAM by default; bounded, it spills to disk instead, so a million-CI
# category stays within a small machine's memory next to Dagster and the API clients. At 768 MB
# a daily change set of a million CIs spills a little and takes no longer than at 1.5 GB, and a
# first sync of a million CIs into an empty Hector sorts its ten million rows, where at 1.5 GB
# DuckDB's sort ran out of memory before it spilled. The engine's settings are made once, when it
# starts (each SET costs ~0.35-0.7 ms, and a step takes dozens of connections): the
# reconciliation turns preserve_insertion_order off for its statements only and puts it back.
# The progress bar is a connection's own setting, so each connection turns it off.
DUCKDB_SETTINGS = {"memory_limit": "768MB", "enable_progress_bar": "false", "preserve_insertion_order": "true"}
PER_CONNECTION = ("enable_progress_bar",)


def tune(
    con: duckdb.DuckDBPyConnection, names: tuple[str, ...] = tuple(DUCKDB_SETTINGS),
) -> duckdb.DuckDBPyConnection:
    """Apply DUCKDB_SETTINGS (those of `names`) to `con`."""
    for name in names:
        con.execute(f"SET {name} = '{DUCKDB_SETTINGS[name]}'")
    return con


# Derived tables whose `fields` became a list in target order (a MAP cost seconds per million CIs).
LIST_FIELDS = ("desired_model", "desired_asset")


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the database of `con` to this version's schema. One already there (what each run
    finds) costs one query of its columns rather than the whole script (~10 ms a run)."""
    if _SCHEMA_COLUMNS.of(con) <= _columns(con):
        return
    con.execute(SCHEMA)
    for table in LIST_FIELDS:  # a file of an older version: its derived rows go, the next run derives them again
        kind = scalar(con, "SELECT data_type FROM duckdb_columns() WHERE database_name = current_database() "
                           "AND schema_name = 'main' AND table_name = ? AND column_name = 'fields'", [table])
        if kind != "VARCHAR[]":
            con.execute(f"DELETE FROM {table}")
            con.execute(f"ALTER TABLE {table} ALTER COLUMN fields SET DATA TYPE VARCHAR[] USING NULL")


def _columns(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str, str]]:
    """(table, column, type) of every column of the database `con` uses."""
    return set(con.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() "
                           "WHERE database_name = current_database() AND schema_name = 'main'").fetchall())


class _SchemaColumns:
    """The columns SCHEMA makes, learnt once per process from a scratch in-memory database."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._columns: frozenset[tuple[str, str, str]] | None = None

    def of(self, con: duckdb.DuckDBPyConnection) -> frozenset[tuple[str, str, str]]:
        """Learnt, the first time, beside the database `con` uses (attached for the moment)."""
        with self._guard:
            if self._columns is None:
                scratch = con.cursor()
                try:
                    scratch.execute("ATTACH ':memory:' AS hector_sync_schema")
                    scratch.execute("USE hector_sync_schema")
                    scratch.execute(SCHEMA)
                    self._columns = frozenset(_columns(scratch))
                finally:
                    scratch.close()
                    con.execute("DETACH DATABASE IF EXISTS hector_sync_schema")
            return self._columns


_SCHEMA_COLUMNS = _SchemaColumns()


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> object:
    """The first value of a query, reading the result to its end (DuckDB 2 insists)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def executed(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    """The rows of a small result, from one execution. A relation's `.pl()` parses, binds and
    optimizes its SQL twice, which for a long statement costs more than its few rows; Arrow
    from an executed result copies the rows once more, which only a large one notices."""
    with warnings.catch_warnings():  # DuckDB's advice against that copy, which is ours to weigh
        warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)
        return pl.DataFrame(con.execute(sql).to_arrow_table())


@dataclass
class _Engine:
    con: duckdb.DuckDBPyConnection
    blocks: int = 0  # connections open on the file now (nested ones of the lock's holder included)


class Engines:
    """The process's in-memory DuckDB engines, one per file in use, each attaching its file for
    the length of a connection. `duckdb.connect(file)` starts a whole engine (15-20 ms) whenever
    no other connection of the process has the file open; attaching costs 1-2 ms, and once
    detached the file is free for other processes. Callers hold the file's lock, so one thread at
    a time attaches a given file. When another file is attached, an idle engine is closed rather
    than reused: its spills go beside its own file, and a temp_directory in use cannot change."""

    ALIAS = "hector_sync_file"

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._engines: dict[Path, _Engine] = {}

    @contextmanager
    def connect(self, path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with `path` attached as its default database; call under the file lock."""
        engine = self._enter(path)
        try:
            outermost = engine.blocks == 1
            if outermost:
                quoted = str(path).replace("'", "''")
                engine.con.execute(f"ATTACH '{quoted}' AS {self.ALIAS}")
            try:
                con = engine.con.cursor()
                try:
                    con.execute(f"USE {self.ALIAS}")
                    yield con
                finally:
                    con.close()  # rolls back what the block left open
            finally:
                if outermost:
                    engine.con.execute(f"DETACH {self.ALIAS}")  # checkpoints, and lets go of the file
        finally:
            with self._guard:
                engine.blocks -= 1

    def _enter(self, path: Path) -> _Engine:
        with self._guard:
            for other in [p for p, e in self._engines.items() if p != path and not e.blocks]:
                self._engines.pop(other).con.close()
            engine = self._engines.get(path)
            if engine is None:
                engine = self._engines[path] = _Engine(tune(duckdb.connect(config={"temp_directory": f"{path}.tmp"})))
            engine.blocks += 1
            return engine


ENGINES = Engines()


class Store:
    """The sync's DuckDB file. Cheap to build; holds no connection between calls."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection under the file lock, the file let go on exit: keep the block short."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, ENGINES.connect(self.path.absolute()) as con:
            tune(con, PER_CONNECTION)
            if not self._schema_ready:
                create_schema(con)
                self._schema_ready = True
            yield con

    @contextmanager
    def category_lock(self, category_key: str, holder: str, wait_s: float = CATEGORY_WAIT_S) -> Iterator[None]:
        """One run of a category at a time, across processes: a scheduled run and a manual
        rematerialization of the same category must not interleave their snapshots, change
        set and writeback. The second waits up to `wait_s`, then is refused saying who holds
        it. The OS releases the lock of a killed process, so a crash never leaves it stuck."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        base = self.path.parent / f"{self.path.name}.{category_key}"
        lock = FileLock(f"{base}.lock", timeout=wait_s)
        owner = Path(f"{base}.owner")
        try:
            lock.acquire()
        except Timeout:
            held_by = owner.read_text(encoding="utf-8").strip() if owner.exists() else "another process"
            raise CategoryBusy(
                f"category '{category_key}' is being synced by {held_by}; this run waited {wait_s:g} s "
                "for it to finish and gave up without reading or writing anything. Run it again "
                "once that run has ended."
            ) from None
        try:
            owner.write_text(f"{holder} (pid {os.getpid()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)\n",
                             encoding="utf-8")
            yield
        finally:
            lock.release()

    def query(self, sql: str, params: list[object] | dict[str, object] | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return con.sql(sql, params=params or None).pl()

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A folder for Parquet files of pages in flight, removed afterwards."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="stage-", dir=self.path.parent))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def replace_rows(
        self,
        table: str,
        category_key: str,
        staged: Path | pl.DataFrame,
        columns: tuple[str, ...],
        *,
        full: bool,
        key: str,
        select: dict[str, str] | None = None,
    ) -> int:
        """Swap a category's staged snapshot in, in one transaction.

        `staged` is a folder of Parquet files, or the one frame of a read of a single page. A
        full read replaces the category's rows; an incremental read replaces only the rows it
        saw (by `key`). `select` gives SQL for columns that need a cast from the staged form.
        """
        exprs = ", ".join((select or {}).get(c, f'"{c}"') for c in columns)
        with self.connect() as con:
            if isinstance(staged, pl.DataFrame):
                source, present = "staged_rows", staged.height > 0
                con.register(source, staged)  # the connection's own, gone with it
            else:
                files = sorted(staged.glob("*.parquet"))
                source, present = f"read_parquet({[str(f) for f in files]!r}, union_by_name = true)", bool(files)
            con.execute("BEGIN")
            if full:
                con.execute(f"DELETE FROM {table} WHERE category_key = ?", [category_key])
            if present:
                if not full:
                    con.execute(
                        f"DELETE FROM {table} WHERE category_key = ? AND {key} IN "
                        f"(SELECT {key} FROM {source})",
                        [category_key],
                    )
                con.execute(
                    f"INSERT INTO {table} (category_key, {', '.join(columns)}) "
                    f"SELECT ?, {exprs} FROM {source}",
                    [category_key],
                )
            count = scalar(con, f"SELECT count(*) FROM {table} WHERE category_key = ?", [category_key])
            con.execute("COMMIT")
        return int(count or 0)
