"""The tables a materialization shows in the Dagster UI, as an operator reads them: one cell
per value whatever the inventory text holds, old → new per field, the risky changes first."""

import re

import polars as pl

from hector_sync.defs.assets import PREVIEW_ROWS, change_table, markdown_table, skipped_table
from hector_sync.reconcile.changes import CHANGE_SCHEMA

UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


def changes(*rows: tuple[str, str, str | None, str | None, str | None, str | None]) -> pl.DataFrame:
    """Change rows (action, item, field, old, new, reason) in the change set's own schema."""
    return pl.DataFrame(
        [{"action": a, "item": i, "field": f, "old": o, "new": n, "reason": r, "target_id": "7"} for a, i, f, o, n, r in rows],
        schema=CHANGE_SCHEMA,
    )


def test_inventory_text_stays_in_its_cell_and_reads_as_typed() -> None:
    messy = "HP | LaserJet *Pro* [M404]\r\nsecond_line `x` <b> #3 C:\\temp\\"
    table = markdown_table(pl.DataFrame({"item": ["ci-1"], "value": [messy]}))
    header, rule, row = table.splitlines()
    assert len(UNESCAPED_BAR.findall(row)) == len(UNESCAPED_BAR.findall(header)) == 3, row
    assert "\r" not in row and "\n" not in row
    # every markdown character comes back as itself once the backslashes are read
    shown = re.sub(r"\\(.)", r"\1", row.split(" | ", 1)[1].rstrip(" |"))
    assert shown == "HP | LaserJet *Pro* [M404] second_line `x` <b> #3 C:\\temp\\"


def test_long_tables_say_how_many_rows_are_left_out() -> None:
    table = markdown_table(pl.DataFrame({"item": [f"ci-{n}" for n in range(PREVIEW_ROWS + 5)]}))
    assert table.count("| ci-") == PREVIEW_ROWS
    assert table.endswith("… and 5 more rows")
    assert markdown_table(pl.DataFrame({"item": []}, schema={"item": pl.Utf8})) == "_nothing_"


def test_changes_show_old_to_new_with_changes_to_what_exists_first() -> None:
    table = change_table(changes(
        ("create_asset", "ci-9", "title", None, "PRN-9", None),
        ("update_asset", "ci-2", "attributes.Serial number", "SN1", "SN2", None),
        ("move_asset", "ci-3", None, None, None, "model changed"),
        ("retire_asset", "ci-4", "status", "in_stock", "retired", "CI retired in C2 ITSM"),
    ))
    body = table.splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in body] == [
        "retire\\_asset", "move\\_asset", "update\\_asset", "create\\_asset"]
    assert "attributes.Serial number: SN1 → SN2" in body[2]
    assert "title: ∅ → PRN-9" in body[3]


def test_skipped_items_show_the_value_that_stopped_them_and_why() -> None:
    table = skipped_table(changes(
        ("skip", "ci-5", "Cost", None, "1 234,50 $", "Cost '1 234,50 $' is not a number"),
        ("update_asset", "ci-2", "title", "a", "b", None),
    ))
    assert table.splitlines()[0] == "| item | field | value | reason |"
    assert table.splitlines()[2:] == ["| ci-5 | Cost | 1 234,50 $ | Cost '1 234,50 $' is not a number |"]
    assert skipped_table(pl.DataFrame(schema=CHANGE_SCHEMA)) == "_nothing_"


def test_a_huge_value_is_cut_in_its_cell_saying_how_long_it_was() -> None:
    """A 100 kB field would otherwise go whole into the event log and the UI, run after run."""
    huge = "HP LaserJet " + "x" * 100_000
    updates = change_table(changes(("update_asset", "ci-2", "note", huge, "short note", None)))
    skips = skipped_table(changes(("skip", "ci-5", "Cost", None, huge, f"Cost '{huge}' is not a number")))
    rejected = markdown_table(pl.DataFrame({"ci": ["ci-6"], "value": [huge]}))

    for table in (updates, skips, rejected):
        assert len(table) < 1_000, table[:2_000]
        assert "HP LaserJet xxx" in table and "… (100,012 characters)" in table, table
    # the old value is cut on its own: the new one still shows beside it
    assert "… (100,012 characters) → short note" in updates
    assert skips.count("… (100,012 characters)") == 1 and "… (100,035 characters)" in skips
