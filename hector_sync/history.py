"""`hector-sync history ITEM`: the recorded life of one CI or asset, oldest change first.

An operator asks about the thing in front of them (a CI id from C2 ITSM, an asset id or the
tag on the device), yet a linked pair's changes are recorded under both sides' ids, in both
directions. So ITEM is resolved to the CI ids and asset ids it stands for, one link away, and
every change row of either is shown: create, update, move, retire and undo read as one story,
each with the run id to hand to `hector-sync undo`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import duckdb

from hector_sync.config import TO_C2, TO_HECTOR, SyncConfig
from hector_sync.store import Store
from hector_sync.textsafe import text, value

# Rows of one instant in the order the writeback applies them; unlisted actions sort last.
ACTION_ORDER = [
    "link", "unlink", "create_asset", "create_ci", "link_asset", "link_ci", "unlink_asset", "unlink_ci",
    "update_asset", "update_ci", "revert_drift",
    "move_asset", "retire_asset", "retire_ci", "reactivate_asset", "reactivate_ci", "unchanged",
    "missing", "skip",
]
# Subcategory rows name a model and a subcategory id, which could equal an unrelated asset id.
NOT_MODELS = "action NOT IN ('create_subcategory', 'update_subcategory')"
# Each direction's rows name the CI and the asset from opposite ends.
CI_END = {TO_HECTOR.value: "item", TO_C2.value: "target_id"}
ASSET_END = {TO_HECTOR.value: "target_id", TO_C2.value: "item"}
MATCHES = f"""((direction = '{TO_HECTOR}' AND (list_contains($cis, item) OR list_contains($assets, target_id)))
    OR (direction = '{TO_C2}' AND (list_contains($assets, item) OR list_contains($cis, target_id))))"""
COLUMNS = ("when (UTC)", "run", "plan", "category", "action", "outcome", "field: old → new — reason")

Row = dict[str, Any]


def _resolve(con: duckdb.DuckDBPyConnection, item: str) -> tuple[list[str], list[str]]:
    """The CI ids and asset ids ITEM may stand for: itself as either, the asset carrying it as
    tag (in the latest snapshot, or as a sync wrote it: a just-created asset is in no snapshot
    yet), and whatever the link table, the snapshot's c2 refs or the history pair with those."""
    cis, assets = {item}, {item}
    assets |= {r[0] for r in con.execute(
        "SELECT id::VARCHAR FROM hector_asset WHERE trim(asset_tag) = $tag UNION "
        f"SELECT target_id FROM change_history WHERE direction = '{TO_HECTOR}' AND field = 'asset_tag' "
        "AND trim(new) = $tag AND target_id IS NOT NULL", {"tag": item}).fetchall()}
    pairs = con.execute(
        f"""
        SELECT ci_id, asset_id::VARCHAR FROM link
        WHERE list_contains($cis, ci_id) OR list_contains($assets, asset_id::VARCHAR)
        UNION SELECT c2_ref, id::VARCHAR FROM hector_asset
        WHERE c2_ref IS NOT NULL AND (list_contains($cis, c2_ref) OR list_contains($assets, id::VARCHAR))
        UNION SELECT CASE direction WHEN '{TO_HECTOR}' THEN item ELSE target_id END,
                     CASE direction WHEN '{TO_HECTOR}' THEN target_id ELSE item END
        FROM change_history WHERE target_id IS NOT NULL AND {NOT_MODELS} AND {MATCHES}
        """,
        {"cis": sorted(cis), "assets": sorted(assets)},
    ).fetchall()
    return sorted(cis | {c for c, _ in pairs}), sorted(assets | {a for _, a in pairs})


def _rows(con: duckdb.DuckDBPyConnection, cis: list[str], assets: list[str]) -> list[Row]:
    cursor = con.execute(
        f"""
        SELECT * FROM change_history h WHERE {NOT_MODELS} AND {MATCHES}
        ORDER BY recorded_at, coalesce(array_position($order, action), 999), item, field
        """,
        {"cis": cis, "assets": assets, "order": ACTION_ORDER},
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def _header(rows: list[Row], tags: dict[str, str]) -> str:
    """Which CI and asset the rows turned out to be about: the operator checks the match."""
    assets = dict.fromkeys(r[ASSET_END[r["direction"]]] for r in rows if r["direction"] in ASSET_END)
    cis = dict.fromkeys(r[CI_END[r["direction"]]] for r in rows if r["direction"] in CI_END)
    named = [f"Hector asset {text(a)}" + (f" (asset tag {value(tags[a])})" if tags.get(a) else "")
             for a in assets if a]
    named += [f"C2 ITSM CI {text(c)}" for c in cis if c]
    return f"{', '.join(named)}: {len(rows)} change{'s' * (len(rows) != 1)}"


def _line(row: Row) -> tuple[str, ...]:
    """The short, fixed-shape facts first, to line up; the free text, maybe long, last."""
    when = row["recorded_at"]
    change = f"{text(row['field'])}: {value(row['old'])} → {value(row['new'])}" if row["field"] else ""
    return (
        when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if isinstance(when, datetime) else text(when),
        text(row["run_id"] or (f"by {row['operator']}" if row.get("operator") else "-")),
        text(row["plan_id"] or "-"), text(row["category_key"]),
        text(row["action"]), text(row["outcome"]),
        " — ".join(p for p in (change, text(row["message"])) if p),  # an undo's reason names the run it undoes
    )


def print_history(config: SyncConfig, item: str) -> int:
    """Print the changes recorded for ITEM; 1, saying what was searched on stderr, when there
    are none, so a typo is not mistaken for an item the sync never had to touch."""
    item = item.strip()
    path = config.storage.duckdb_path
    searched = (f"hector-sync history: no change recorded for {value(item)} as a C2 ITSM CI id, "
                f"a Hector asset id or an asset tag in {text(path)}")
    if not path.exists():  # opening it would leave an empty file where the operator expects data
        print(f"{searched} (the file does not exist: no sync has run with this configuration)", file=sys.stderr)
        return 1
    rows: list[Row] = []
    if item:
        with Store(path).connect() as con:
            cis, assets = _resolve(con, item)
            rows = _rows(con, cis, assets)
            snapshot = dict(con.execute(
                "SELECT id::VARCHAR, any_value(asset_tag) FROM hector_asset "
                "WHERE list_contains($assets, id::VARCHAR) GROUP BY 1", {"assets": assets}).fetchall())
    if not rows:
        print(f"{searched}.", file=sys.stderr)
        return 1
    written = {r["target_id"]: r["new"] for r in rows if r["direction"] == TO_HECTOR and r["field"] == "asset_tag"}
    print(_header(rows, written | {k: v for k, v in snapshot.items() if v}))
    lines = [COLUMNS, *(_line(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    for line in lines:
        print("  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]).rstrip())
    return 0
