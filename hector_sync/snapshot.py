"""Pages from C2 ITSM and Hector into the DuckDB snapshot tables, one page in memory at a time.

Each page becomes a typed polars frame written as a Parquet file in a staging folder (a read of
a single page keeps its frame in memory); when the read is complete the category's rows are
swapped in one short transaction. A read that fails halfway leaves the previous snapshot
untouched, and the DuckDB lock is never held while waiting on an API.

A read is complete, or it is refused: the paginators account for every item and page a listing
announced (`hector_sync.paging.Listing`), and a listing that ends early, skips or repeats a page,
never ends, or outlasts `max_read_time` fails the read with `ListingIncomplete`, naming the
category, before anything is swapped in. So the last good snapshot stays, and nothing is
retired or moved on the account of a partial read.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import polars as pl

from hector_sync.c2 import C2Client
from hector_sync.catalog import ResolvedCategory
from hector_sync.config import DEFAULT_MAX_READ_TIME
from hector_sync.hector import HectorClient
from hector_sync.paging import Deadline, ListingIncomplete
from hector_sync.progress import Progress
from hector_sync.reconcile.mapping import Scope
from hector_sync.reconcile.normalize import lit
from hector_sync.store import (
    C2_CI_COLUMNS,
    HECTOR_ASSET_COLUMNS,
    HECTOR_SUBCATEGORY_COLUMNS,
    Store,
)

Reporters = Callable[[str], Progress]  # what a read counts ("C2 CIs read") → its reporter

AS_MAP = "CAST(CAST({col} AS JSON) AS MAP(VARCHAR, VARCHAR))"
STAGE_ROWS = 50_000  # rows per staged Parquet file: about 25 MB of pages held before they are written
# Rows per row group of a staged file. The swap reads a row group at a time per thread and keeps
# its order: groups of a whole file (polars' default) took a million-CI swap to 615-665 MB of
# peak memory, groups of 8,192 rows (DuckDB's vector size times 4) to 335-356 MB, and 25% faster.
STAGE_ROW_GROUP = 8_192
AS_TIMESTAMP = "TRY_CAST({col} AS TIMESTAMPTZ)"
AS_JSON_TEXT = "CAST(to_json({col}) AS VARCHAR)"


@dataclass(frozen=True)
class Snapshot:
    read_kind: str  # "full" or "incremental"
    rows_read: int
    pages: int
    table_rows: int
    seconds: float


Noted = Callable[[Snapshot], None]  # notes a read in the file once swapped in, within the swap's hold of it


def prefetched(pages: Iterable[list[dict]], depth: int = 2) -> Iterator[list[dict]]:
    """The pages, fetched by a background thread while the ones before are converted and
    written: the API's latency and our work overlap, with at most `depth` pages held."""
    handoff: queue.Queue[list[dict] | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: list[dict] | BaseException | None) -> bool:
        while not stop.is_set():  # the reader may have stopped: never block on it for good
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for page in pages:
                if not offer(page):
                    return
            offer(None)
        except BaseException as failed:  # handed to the reader, which raises it
            offer(failed)

    worker = threading.Thread(target=pump, name="page-prefetch", daemon=True)
    worker.start()
    try:
        while (page := handoff.get()) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page
    finally:
        stop.set()
        worker.join(timeout=5)


def _text_struct(names: Iterable[str]) -> pl.Struct:
    return pl.Struct({n: pl.Utf8 for n in names})


def _as_map(names: Iterable[str]) -> str:
    """SQL template: the staged JSON text of a struct of these text fields as the snapshot's MAP.
    Read through its known shape (`json_transform`), a million CIs' fields take 0.8 s where
    casting JSON of any shape takes 3.2 s; every field is there, null or not, as JSON encoded it."""
    shape = json.dumps(dict.fromkeys(names, "VARCHAR"))
    if shape == "{}":  # no field to read, and json_transform refuses an empty shape
        return AS_MAP
    literal = lit(shape).replace("{", "{{").replace("}", "}}")
    return f"CAST(json_transform({{col}}, {literal}) AS MAP(VARCHAR, VARCHAR))"


def _ingest(
    store: Store, table: str, key: str, columns: tuple[str, ...], pages: Iterable[list[dict]],
    to_frame: Callable[[list[dict]], pl.DataFrame], *, category_key: str, full: bool,
    select: dict[str, str], progress: Progress, noted: Noted | None = None,
) -> Snapshot:
    """`pages` tell `progress` their total themselves (see `read_c2`); it hears every page.
    `noted` hears the read once swapped in, while the file is still held: one hold, not two.

    Pages are gathered into Parquet files of about STAGE_ROWS rows: a file per page cost as much
    again as its data (2 ms a page, 4 s of a million CIs). A read that never fills one (an
    incremental read, a small category) is swapped in from memory, without the round trip."""
    started = time.monotonic()
    rows = n_pages = files = gathered = 0
    pending: list[pl.DataFrame] = []  # pages not yet staged
    with store.staging() as folder:

        def stage() -> None:
            nonlocal files, gathered
            files += 1
            pl.concat(pending, how="vertical_relaxed").write_parquet(
                folder / f"{files:07d}.parquet", row_group_size=STAGE_ROW_GROUP)
            pending.clear()
            gathered = 0

        try:
            for n_pages, page in enumerate(prefetched(pages), start=1):
                if page:
                    pending.append(to_frame(page))
                    gathered += len(page)
                    if gathered >= STAGE_ROWS:
                        stage()
                rows += len(page)
                progress.advance(len(page), pages=1)
            if files and pending:
                stage()
        except BaseException:
            progress.finish(ok=False)
            raise
        progress.finish()
        with store.connect():
            count = store.replace_rows(
                table, category_key, pl.concat(pending, how="vertical_relaxed") if pending else folder, columns,
                full=full, key=key,
                select={c: s.format(col=f'"{c}"') for c, s in select.items()},
            )
            snapshot = Snapshot("full" if full else "incremental", rows, n_pages, count, time.monotonic() - started)
            if noted:
                noted(snapshot)
    return snapshot


@contextmanager
def _refused(category: str) -> Iterator[None]:
    """A listing that did not account for what it announced fails the read, naming `category`.
    It is raised from the pages, so before `Store.replace_rows`: the last good snapshot stays."""
    try:
        yield
    except ListingIncomplete as incomplete:
        raise replace(incomplete, category=category) from None


def read_c2(
    client: C2Client, store: Store, resolved: ResolvedCategory, *, since: datetime | None,
    progress: Reporters, max_read_time: timedelta = DEFAULT_MAX_READ_TIME, noted: Noted | None = None,
) -> Snapshot:
    """The category's CIs, with fields keyed by trimmed name rather than id (`since` None: full
    read), swapped in and then `noted`.

    `progress("C2 CIs read")` counts the CIs and pages against C2's total of the answer. A
    listing that does not account for that total, or a read longer than `max_read_time`, raises
    `ListingIncomplete` and keeps the last good snapshot."""
    names = resolved.field_names_by_id
    schema = {
        "id": pl.Utf8, "name": pl.Utf8, "status": pl.Utf8, "modified_at": pl.Utf8,
        "version": pl.Int64, "fields": _text_struct(names),
    }

    def to_frame(page: list[dict]) -> pl.DataFrame:
        frame = pl.DataFrame(page, schema=schema, strict=False)
        return frame.select(
            pl.col("id").alias("ci_id"), "name", "status", "modified_at", "version",
            pl.col("fields").struct.rename_fields(list(names.values())).struct.json_encode(),
        )

    reporter = progress("C2 CIs read")
    pages = client.iter_ci_pages(
        resolved.cmdb_id, resolved.c2_category_id, modified_since=since, on_total=reporter.expect,
        deadline=Deadline.after(max_read_time),
    )
    with _refused(resolved.category.c2_category.strip()):
        return _ingest(
            store, "c2_ci", "ci_id", C2_CI_COLUMNS, pages, to_frame, category_key=resolved.category.key,
            full=since is None, select={"fields": _as_map(names.values()), "modified_at": AS_TIMESTAMP},
            progress=reporter,
            noted=noted,
        )


def _attribute_names(resolved: ResolvedCategory, scope: Scope) -> dict[str, str]:
    """Hector's own name of each attribute of `scope` → its trimmed name, which the snapshot
    keys the `attributes` map by (as `read_c2` keys `fields` by the trimmed field name)."""
    return {resolved.hector_name(scope, name): name for (s, name) in sorted(resolved.attribute_kinds) if s == scope}


def read_hector(
    client: HectorClient, store: Store, resolved: ResolvedCategory, *, since: datetime | None,
    progress: Reporters, max_read_time: timedelta = DEFAULT_MAX_READ_TIME, noted: Noted | None = None,
) -> tuple[Snapshot, Snapshot]:
    """The mapped Hector category: its subcategories, then its assets (their read `noted`),
    each counted by its own `progress("Hector subcategories read")`, `progress("Hector assets
    read")`. Both lists together must be read within `max_read_time`, each accounting for its
    `total`, else `ListingIncomplete` (the subcategories may already be swapped in when the
    assets fail: they are complete, and the change set does not run without the assets)."""
    key = resolved.category.key
    category_id = resolved.hector_category_id
    model_attributes, asset_attributes = _attribute_names(resolved, "model"), _attribute_names(resolved, "asset")
    model_schema = {
        "id": pl.Int64, "category_id": pl.Int64, "maker": pl.Utf8, "model": pl.Utf8,
        "description": pl.Utf8, "note": pl.Utf8, "price": pl.Float64, "weight": pl.Float64,
        "vendor_sku": pl.Utf8, "attributes": _text_struct(model_attributes),
        "updated_at": pl.Utf8, "version": pl.Int64,
    }
    ref = pl.Struct({"source": pl.Utf8, "id": pl.Utf8})
    asset_schema = {
        "id": pl.Int64, "category_id": pl.Int64, "subcategory_id": pl.Int64, "stockroom_id": pl.Int64,
        **{c: pl.Utf8 for c in HECTOR_ASSET_COLUMNS[4:13]},
        "attributes": _text_struct(asset_attributes),
        "external_refs": pl.List(ref), "updated_at": pl.Utf8, "version": pl.Int64,
    }

    def models(page: list[dict]) -> pl.DataFrame:
        frame = pl.DataFrame(page, schema=model_schema, strict=False)
        return frame.with_columns(
            pl.col("attributes").struct.rename_fields(list(model_attributes.values())).struct.json_encode())

    def assets(page: list[dict]) -> pl.DataFrame:
        frame = pl.DataFrame(page, schema=asset_schema, strict=False)
        c2_ref = frame["external_refs"].list.eval(
            pl.element().filter(pl.element().struct.field("source") == "c2").struct.field("id")
        ).list.first()
        return frame.with_columns(
            pl.col("attributes").struct.rename_fields(list(asset_attributes.values())).struct.json_encode(),
            c2_ref.alias("c2_ref"),
        )

    common = {"category_key": key, "full": since is None}
    deadline = Deadline.after(max_read_time)
    with _refused(resolved.category.hector_category.strip()):
        reporter = progress("Hector subcategories read")
        sub = _ingest(
            store, "hector_subcategory", "id", HECTOR_SUBCATEGORY_COLUMNS,
            client.iter_subcategory_pages(category_id, updated_since=since, on_total=reporter.expect,
                                          deadline=deadline),
            models, select={"attributes": _as_map(model_attributes.values()), "updated_at": AS_TIMESTAMP},
            progress=reporter, **common,
        )
        reporter = progress("Hector assets read")
        ast = _ingest(
            store, "hector_asset", "id", HECTOR_ASSET_COLUMNS,
            client.iter_asset_pages(category_id=category_id, updated_since=since, on_total=reporter.expect,
                                    deadline=deadline),
            assets, select={"attributes": _as_map(asset_attributes.values()), "updated_at": AS_TIMESTAMP,
                            "external_refs": AS_JSON_TEXT},
            progress=reporter, noted=noted, **common,
        )
    return sub, ast
