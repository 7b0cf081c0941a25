"""How the assets' materializations read in the Dagster UI: previews of rows, a plan's identity,
a snapshot's figures and links to the other categories' partitions. The assets (defs/assets.py)
and the undo job (defs/jobs.py) decide what to show; this module decides how it looks.

A preview is a Dagster table (`MetadataValue.table`), which the UI draws on the page as a table,
its cells as plain text: inventory text full of |, *, _ and [] reads as typed with no escaping.
It holds the first PREVIEW_ROWS rows, each cell cut to PREVIEW_CHARS; how many rows it leaves
out is the int entry `<name>_more_rows` beside it (0: the table is whole), since a table value
has no room for a note, and an extra row would pass for data.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import polars as pl

from hector_sync.plans import Plan
from hector_sync.snapshot import Snapshot
from hector_sync.textsafe import shortened

PREVIEW_ROWS = 20
# A value's first characters in a preview cell: enough to recognise it, while a 100 kB field
# cannot swell the event log (which keeps every materialization's metadata) or the UI's page.
PREVIEW_CHARS = 80
# The preview shows the first rows: changes to what exists come before creates, the riskiest first.
PREVIEW_ORDER = ["revert_drift", "retire_asset", "retire_ci", "move_asset", "update_asset", "update_ci",
                 "update_subcategory", "unlink_asset", "unlink_ci", "link_asset", "link_ci", "create_subcategory",
                 "create_asset", "create_ci"]
CHANGE_COLUMNS = ["action", "item", "target", "change", "reason"]


def cell(value: object) -> str:
    """A value as one table cell: on one line, cut to PREVIEW_CHARS; None is an empty cell."""
    return shortened(" ".join(("" if value is None else str(value)).splitlines()), PREVIEW_CHARS)


@dataclass(frozen=True)
class Preview:
    """The first rows of something as a Dagster table, and how many rows it leaves out."""

    table: dg.TableMetadataValue
    more_rows: int

    def metadata(self, name: str) -> dict[str, dg.MetadataValue]:
        """The entries `name` (the table) and `name`_more_rows, in that order."""
        return {name: self.table, f"{name}_more_rows": dg.MetadataValue.int(self.more_rows)}


def _preview(columns: list[str], cells: list[list[str]], total: int) -> Preview:
    schema = dg.TableSchema(columns=[dg.TableColumn(name=c, type="string") for c in columns])
    records = [dg.TableRecord(data=dict(zip(columns, row, strict=True))) for row in cells]
    return Preview(dg.MetadataValue.table(records=records, schema=schema), total - len(cells))


def preview_table(frame: pl.DataFrame, limit: int = PREVIEW_ROWS) -> Preview:
    """The frame's first `limit` rows, its columns as they are."""
    head = frame.head(limit)
    return _preview(head.columns, [[cell(v) for v in row] for row in head.rows()], frame.height)


def change_table(rows: pl.DataFrame) -> Preview:
    """Change rows as an operator reads them: what, on which item, and the field's old → new."""
    rank = pl.col("action").replace_strict(PREVIEW_ORDER, list(range(len(PREVIEW_ORDER))), default=len(PREVIEW_ORDER))
    head = rows.sort(rank, maintain_order=True).head(PREVIEW_ROWS)
    cells = [[cell(action), cell(item), cell(target), _change(field, old, new), cell(reason)]
             for action, item, target, field, old, new, reason
             in head.select("action", "item", "target_id", "field", "old", "new", "reason").rows()]
    return _preview(CHANGE_COLUMNS, cells, rows.height)


def _change(field: str | None, old: str | None, new: str | None) -> str:
    """The change cell, field: old → new (∅: none), each value cut on its own so that a long old
    value cannot hide the new one."""
    if field is None:
        return ""
    return f"{cell(field)}: {cell('∅' if old is None else old)} → {cell('∅' if new is None else new)}"


def skipped_table(rows: pl.DataFrame) -> Preview:
    """The items left alone and why, with the value that stopped them."""
    skips = rows.filter(pl.col("action") == "skip")
    return preview_table(skips.select("item", "field", pl.col("new").alias("value"), "reason"))


def partition_links(context: dg.AssetExecutionContext) -> dg.MetadataValue:
    """Every category's partition of this asset, one click away from the one just materialized
    (markdown: a table cell cannot hold a link)."""
    asset = context.asset_key.to_user_string()
    links = [
        f"[{key}](/assets/{asset}?view=partitions&partition={key})" + (" (this one)" if key == context.partition_key else "")
        for key in context.assets_def.partitions_def.get_partition_keys()
    ]
    return dg.MetadataValue.md(" · ".join(links))


def plan_metadata(plan: Plan) -> dict[str, object]:
    """A plan's identity as both its change set and its writeback show it."""
    return {
        "plan_id": plan.plan_id, "plan_kind": plan.kind + (f" of run {plan.undo_of}" if plan.undo_of else ""),
        "planned_at": f"{plan.planned_at:%Y-%m-%d %H:%M:%S} UTC", "planned_from": plan.describe_reads(),
    }


def snapshot_metadata(snap: Snapshot, calls: dict[str, int]) -> dict[str, object]:
    return {
        "dagster/row_count": snap.table_rows, "read": snap.read_kind, "rows_read": snap.rows_read,
        "pages": snap.pages, "duration_s": round(snap.seconds, 2), **{f"api_{k}": v for k, v in calls.items()},
    }
