"""The DuckDB file between and during connections: another process gets in between two of
them (the UI, a scheduled run, `plan`), and each connection starts as a fresh one would, although
the process keeps one DuckDB engine for all of them (`store.Engines`)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from filelock import FileLock, Timeout

from hector_sync.config import Direction
from hector_sync.reconcile import Reconciler
from hector_sync.store import Store, scalar
from hector_sync_tests.test_reconcile import ATTRIBUTES, CATEGORY

# What another process does with the file: open it with DuckDB itself and count the reads noted.
OTHER_PROCESS = (
    "import duckdb, sys\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print(con.execute('SELECT count(*) FROM snapshot_state').fetchone()[0])\n"
)


def read_elsewhere(path: Path) -> int:
    done = subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout)


def note_read(store: Store, system: str) -> None:
    with store.connect() as con:
        con.execute("INSERT INTO snapshot_state (category_key, system, read_kind, read_at) VALUES ('printers', ?, "
                    "'full', ?)", [system, datetime.now(UTC)])


def test_another_process_opens_the_file_between_two_connections(tmp_path: Path) -> None:
    store = Store(tmp_path / "sync.duckdb")
    note_read(store, "c2")
    assert read_elsewhere(store.path) == 1
    note_read(store, "hector")  # and this process attaches it again after the other one let go
    assert read_elsewhere(store.path) == 2


def test_a_connection_holds_the_file_lock_that_other_processes_queue_on(tmp_path: Path) -> None:
    store = Store(tmp_path / "sync.duckdb")
    with store.connect(), pytest.raises(Timeout):
        FileLock(f"{store.path}.lock", timeout=0.2).acquire()
    with FileLock(f"{store.path}.lock", timeout=0.2):
        pass


def test_a_connection_inside_another_of_the_same_store_joins_it(tmp_path: Path) -> None:
    """A step may batch its calls in one connection: those that take their own join it, and the
    file is let go when the outer one ends."""
    store = Store(tmp_path / "sync.duckdb")
    with store.connect() as outer:
        note_read(store, "c2")
        outer.execute("INSERT INTO snapshot_state (category_key, system, read_kind, read_at) VALUES "
                      "('printers', 'hector', 'full', now())")
    assert read_elsewhere(store.path) == 2


def test_the_reconciliation_leaves_the_engine_settings_as_it_found_them(tmp_path: Path) -> None:
    """The reconciliation turns insertion order off for its own statements; the setting is the
    process's one engine's, so the next connection must find it back on, even after a failed
    statement; and each file spills beside itself."""
    first, second = Store(tmp_path / "first.duckdb"), Store(tmp_path / "second.duckdb")
    reconciler = Reconciler.for_category(CATEGORY, ATTRIBUTES, "Main warehouse")
    with first.connect() as con:
        reconciler.derive(con)
        reconciler.changes(con, Direction.C2_TO_HECTOR, full_read=True)
        assert scalar(con, "SELECT current_setting('preserve_insertion_order')") is True
        con.execute("DROP TABLE hector_asset")
        with pytest.raises(duckdb.CatalogException):
            reconciler.changes(con, Direction.C2_TO_HECTOR, full_read=True)
    with first.connect() as con:
        assert scalar(con, "SELECT current_setting('preserve_insertion_order')") is True
        assert scalar(con, "SELECT current_setting('temp_directory')") == f"{first.path.absolute()}.tmp"
    with second.connect() as con:
        assert scalar(con, "SELECT current_setting('temp_directory')") == f"{second.path.absolute()}.tmp"


def test_a_file_of_an_older_version_gets_list_fields_and_derives_again(tmp_path: Path) -> None:
    """desired_model/desired_asset.fields were a MAP: a file written then opens, its derived rows
    (a copy of what the next run derives) dropped, instead of failing that run's insert."""
    path = tmp_path / "sync.duckdb"
    old = duckdb.connect(str(path))
    old.execute("CREATE TABLE desired_asset (category_key VARCHAR NOT NULL, ci_id VARCHAR NOT NULL, "
                "model_key VARCHAR NOT NULL, identify_value VARCHAR, modified_at TIMESTAMPTZ, "
                "fields MAP(VARCHAR, VARCHAR))")
    old.execute("INSERT INTO desired_asset VALUES ('printers', 'ci-1', '[]', NULL, NULL, MAP {'title': 'PRN-1'})")
    old.close()
    with Store(path).connect() as con:
        types = dict(con.execute("SELECT table_name, data_type FROM duckdb_columns() WHERE column_name = 'fields' "
                                 "AND table_name IN ('desired_asset', 'desired_model')").fetchall())
        assert types == {"desired_asset": "VARCHAR[]", "desired_model": "VARCHAR[]"}
        assert scalar(con, "SELECT count(*) FROM desired_asset") == 0
        con.execute("INSERT INTO desired_asset VALUES ('printers', 'ci-1', '[]', NULL, NULL, ['PRN-1'], ['HP'], 42)")
