"""The tables a materialization shows in the Dagster UI, as an operator reads them: one cell
per value whatever the inventory text holds, old → new per field, the risky changes first."""

import dagster as dg
import polars as pl

from hector_sync.defs.metadata import PREVIEW_ROWS, Preview, change_table, preview_table, skipped_table
from hector_sync.reconcile.changes import CHANGE_SCHEMA


def changes(*rows: tuple[str, str, str | None, str | None, str | None, str | None]) -> pl.DataFrame:
    """Change rows (action, item, field, old, new, reason) in the change set's own schema."""
    return pl.DataFrame(
        [{"action": a, "item": i, "field": f, "old": o, "new": n, "reason": r, "target_id": "7"} for a, i, f, o, n, r in rows],
        schema=CHANGE_SCHEMA,
    )


def columns(preview: Preview) -> list[str]:
    """The table's header, as the UI draws it."""
    return [c.name for c in preview.table.schema.columns]


def rows(preview: Preview) -> list[dict[str, object]]:
    """The table's rows in order, each cell by its column, as the UI draws them."""
    return [dict(r.data) for r in preview.table.records]


def stored(preview: Preview) -> str:
    """The table's rows as the event log keeps them (JSON, non-ASCII escaped)."""
    return dg.serialize_value(list(preview.table.records))


def test_inventory_text_stays_in_its_cell_and_reads_as_typed() -> None:
    messy = "HP | LaserJet *Pro* [M404]\r\nsecond_line `x` <b> #3 C:\\temp\\"
    table = preview_table(pl.DataFrame({"item": ["ci-1"], "value": [messy]}))
    assert columns(table) == ["item", "value"]
    # one cell per value, on one line, every character shown as itself
    assert rows(table) == [{"item": "ci-1", "value": "HP | LaserJet *Pro* [M404] second_line `x` <b> #3 C:\\temp\\"}]
    assert table.more_rows == 0


def test_long_tables_say_how_many_rows_are_left_out() -> None:
    table = preview_table(pl.DataFrame({"item": [f"ci-{n}" for n in range(PREVIEW_ROWS + 5)]}))
    assert rows(table) == [{"item": f"ci-{n}"} for n in range(PREVIEW_ROWS)]
    assert table.more_rows == 5
    assert table.metadata("rejected_preview") == {
        "rejected_preview": table.table, "rejected_preview_more_rows": dg.MetadataValue.int(5)}
    empty = preview_table(pl.DataFrame({"item": []}, schema={"item": pl.Utf8}))
    assert columns(empty) == ["item"] and rows(empty) == [] and empty.more_rows == 0


def test_changes_show_old_to_new_with_changes_to_what_exists_first() -> None:
    table = change_table(changes(
        ("create_asset", "ci-9", "title", None, "PRN-9", None),
        ("update_asset", "ci-2", "attributes.Serial number", "SN1", "SN2", None),
        ("move_asset", "ci-3", None, None, None, "model changed"),
        ("retire_asset", "ci-4", "status", "in_stock", "retired", "CI retired in C2 ITSM"),
    ))
    assert columns(table) == ["action", "item", "target", "change", "reason"]
    body = rows(table)
    assert [row["action"] for row in body] == ["retire_asset", "move_asset", "update_asset", "create_asset"]
    assert body[2]["change"] == "attributes.Serial number: SN1 → SN2"
    assert body[3]["change"] == "title: ∅ → PRN-9"
    assert table.more_rows == 0


def test_skipped_items_show_the_value_that_stopped_them_and_why() -> None:
    table = skipped_table(changes(
        ("skip", "ci-5", "Cost", None, "1 234,50 $", "Cost '1 234,50 $' is not a number"),
        ("update_asset", "ci-2", "title", "a", "b", None),
    ))
    assert columns(table) == ["item", "field", "value", "reason"]
    assert rows(table) == [{"item": "ci-5", "field": "Cost", "value": "1 234,50 $", "reason": "Cost '1 234,50 $' is not a number"}]
    empty = skipped_table(pl.DataFrame(schema=CHANGE_SCHEMA))
    assert columns(empty) == ["item", "field", "value", "reason"] and rows(empty) == [] and empty.more_rows == 0


def test_a_huge_value_is_cut_in_its_cell_saying_how_long_it_was() -> None:
    """A 100 kB field would otherwise go whole into the event log and the UI, run after run."""
    huge = "HP LaserJet " + "x" * 100_000
    updates = change_table(changes(("update_asset", "ci-2", "note", huge, "short note", None)))
    skips = skipped_table(changes(("skip", "ci-5", "Cost", None, huge, f"Cost '{huge}' is not a number")))
    rejected = preview_table(pl.DataFrame({"ci": ["ci-6"], "value": [huge]}))

    for table in (updates, skips, rejected):
        assert len(stored(table)) < 1_000, stored(table)[:2_000]
        shown = " | ".join(str(v) for row in rows(table) for v in row.values())
        assert "HP LaserJet xxx" in shown and "… (100,012 characters)" in shown, shown
    # the old value is cut on its own: the new one still shows beside it
    assert rows(updates)[0]["change"].endswith("… (100,012 characters) → short note")
    [skip] = rows(skips)
    assert " ".join(skip.values()).count("… (100,012 characters)") == 1 and "… (100,035 characters)" in skip["reason"]
