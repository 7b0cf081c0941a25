"""A snapshot holds what the API listed, however its pages were staged: kept in memory (a read
smaller than `snapshot.STAGE_ROWS`, as an incremental read or a small category is) or gathered
into Parquet files (a large read)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from hector_sync import snapshot
from hector_sync.config import SyncConfig, load_config
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync.sync import CategorySync, open_clients
from hector_sync_tests.conftest import WriteConfig

PRINTERS = 1_100  # three C2 ITSM pages: 500, 500 and 100 CIs


@pytest.fixture(scope="module")
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=40, sizes={"Printers": PRINTERS}) as running:
        yield running


def read_printers(config: SyncConfig) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]], dict[str, str]]:
    """A full read of the printers' CIs: the snapshot's rows, what C2 ITSM listed, and the
    category's field names by id."""
    with open_clients(config) as (c2, hector):
        steps = CategorySync(config, config.category("printers"), Store(config.storage.duckdb_path), c2, hector,
                             log=lambda _: None)
        steps.resolve_catalog()
        read, _ = steps.snapshot_c2("full")
        listed = [ci for page in c2.iter_ci_pages(steps.resolved.cmdb_id, steps.resolved.c2_category_id) for ci in page]
        names = steps.resolved.field_names_by_id
    rows = Store(config.storage.duckdb_path).query(
        "SELECT ci_id, name, status, modified_at, version, fields FROM c2_ci WHERE category_key = 'printers' "
        "ORDER BY ci_id").rows()
    assert read.rows_read == read.table_rows == len(rows) == PRINTERS and read.pages == 3
    return rows, listed, names


@pytest.mark.parametrize(("stage_rows", "files"), [(400, 3), (1_000, 2)], ids=["a file per page", "pages gathered"])
def test_a_read_staged_in_parquet_files_holds_what_a_read_in_memory_holds(
    sims: RunningSimulators, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, stage_rows: int, files: int,
) -> None:
    config = load_config(write_config(sims.c2_url, sims.hector_url))
    written: list[int] = []
    write_parquet = pl.DataFrame.write_parquet

    def counted(frame: pl.DataFrame, *args: Any, **kwargs: Any) -> Any:
        written.append(frame.height)
        return write_parquet(frame, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", counted)
    in_memory, listed, names = read_printers(config)
    assert written == [], "a read smaller than STAGE_ROWS went through Parquet"

    monkeypatch.setattr(snapshot, "STAGE_ROWS", stage_rows)
    staged, _, _ = read_printers(config)
    assert sum(written) == PRINTERS and len(written) == files, written
    assert staged == in_memory

    # Every field of the category under its trimmed name, null where C2 ITSM listed none; the
    # messy records included.
    by_id = {ci["id"]: ci for ci in listed}
    for ci_id, name, status, _, version, fields in staged:
        ci = by_id[ci_id]
        assert (name, status, version) == (ci["name"], ci["status"], ci["version"]), ci_id
        values = {name: ci["fields"].get(field_id) for field_id, name in names.items()}
        assert fields == {name: None if v is None else str(v) for name, v in values.items()}, ci_id
