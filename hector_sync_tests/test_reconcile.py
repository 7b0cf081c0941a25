"""Reconciliation on small in-memory tables: the rules of sync-rules.md, C2 ITSM → Hector."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from hector_sync.config import CategoryConfig, Direction
from hector_sync import reconcile
from hector_sync.reconcile import Reconciler
from hector_sync.reconcile.changes import ChangeSet, Guard, summarize
from hector_sync.store import create_schema

SETTINGS = {
    "key": "printers",
    "cmdb": "Production",
    "c2_category": "Printers",
    "hector_category": "Printers",
    "direction": "c2_to_hector",
    "model": {"maker": "Manufacturer", "model": "Model", "description": "Description", "price": "Cost"},
    "asset": {"asset_tag": "AssetTag", "acquisition_date": "PurchaseDate"},
    "asset_attributes": {"Serial number": "SerialNumber"},
    "identify_by": {"c2": "SerialNumber", "hector": "Serial number"},
    "on_missing": "retire",
}
CATEGORY = CategoryConfig.model_validate(SETTINGS)
ATTRIBUTES = {("asset", "Serial number"): "text"}


def ci(
    ci_id: str, maker: str | None = "HP", model: str | None = "LaserJet M404", *,
    status: str = "active", day: int = 1, **fields: object,
) -> dict:
    values = {"Manufacturer": maker, "Model": model, "Description": "Mono laser", "SerialNumber": f"SN-{ci_id}"}
    values.update(fields)
    return {
        "ci_id": ci_id, "name": f"PRN-{ci_id}", "status": status,
        "modified_at": datetime(2026, 11, day, tzinfo=UTC), "version": 1,
        "fields": {k: None if v is None else str(v) for k, v in values.items()},
    }


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_schema(con)
    return con


def load_cis(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    for r in rows:
        con.execute(
            "INSERT INTO c2_ci VALUES ('printers', ?, ?, ?, ?, ?, map_from_entries(?))",
            [r["ci_id"], r["name"], r["status"], r["modified_at"], r["version"],
             [{"key": k, "value": v} for k, v in r["fields"].items()]],
        )


def add_subcategory(con, sid: int, maker: str, model: str, description: str, price: float | None = None) -> None:
    con.execute(
        "INSERT INTO hector_subcategory (category_key, id, category_id, maker, model, description, price, attributes, version)"
        " VALUES ('printers', ?, 12, ?, ?, ?, ?, MAP {}, 1)",
        [sid, maker, model, description, price],
    )


def add_asset(con, aid: int, subcategory_id: int, serial: str, c2_ref: str | None = None, **cols: object) -> None:
    values = {"title": f"asset {aid}", "status": "in_stock"} | cols
    con.execute(
        "INSERT INTO hector_asset (category_key, id, category_id, subcategory_id, stockroom_id, title, asset_tag,"
        " acquisition_date, status, attributes, c2_ref, version)"
        " VALUES ('printers', ?, 12, ?, 1, ?, ?, ?, ?, MAP {'Serial number': ?}, ?, 3)",
        [aid, subcategory_id, values["title"], values.get("asset_tag"), values.get("acquisition_date"),
         values["status"], serial, c2_ref],
    )


def plan(con, full_read: bool = True) -> ChangeSet:
    rec = Reconciler.for_category(CATEGORY, ATTRIBUTES, default_stockroom="Main warehouse")
    rec.derive(con)
    return rec.changes(con, Direction.C2_TO_HECTOR, full_read=full_read)


def actions(changes: ChangeSet) -> dict[str, list[str]]:
    """The items of each action listed (the unchanged ones are counted: `changes.unchanged`)."""
    per_item = changes.rows.select("action", "item").unique().sort("item")
    return {a: per_item.filter(pl.col("action") == a)["item"].to_list() for a in per_item["action"].unique()}


def test_first_sync_creates_one_subcategory_per_triple_and_one_asset_per_valid_ci(con) -> None:
    load_cis(con, [
        ci("1", day=2), ci("2", maker="  hp "), ci("3", model="LaserJet M507"),
        ci("4", maker="   "), ci("5", Cost="1 234,50 $"), ci("6", PurchaseDate="2024-02-30"),
    ])
    changes = plan(con)
    got = actions(changes)
    # "  hp " and "HP" are one model; the most recently modified CI (1) gives its spelling.
    assert got["create_subcategory"] == [
        '["hp","laserjet m404","mono laser"]', '["hp","laserjet m507","mono laser"]']
    assert got["create_asset"] == ["1", "2", "3"]
    assert got["skip"] == ["4", "5", "6"]
    reasons = dict(changes.rows.filter(pl.col("action") == "skip").select("item", "reason").iter_rows())
    assert reasons["4"] == "Manufacturer is empty, and Hector needs a maker for the model"
    assert reasons["5"] == "Cost '1 234,50 $' is not a number"
    assert reasons["6"] == "PurchaseDate '2024-02-30' is not a date (YYYY-MM-DD)"
    asset_1 = dict(changes.rows.filter((pl.col("item") == "1")).select("field", "new").iter_rows())
    assert asset_1 == {
        "title": "PRN-1", "attributes.Serial number": "SN-1", "subcategory": "HP / LaserJet M404 / Mono laser",
        "stockroom": "Main warehouse", "external_ref": "c2:1",
    }


def test_resync_of_the_same_state_is_all_unchanged(con) -> None:
    load_cis(con, [ci("1", AssetTag="A-1", PurchaseDate="2024-03-01", Cost=329)])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser", price=329.0)
    add_asset(con, 9001, 40, "SN-1", c2_ref="1", title="PRN-1", asset_tag="A-1", acquisition_date="2024-03-01")
    changes = plan(con)
    assert (actions(changes), changes.unchanged) == ({}, 1)


def test_an_asset_edited_in_hector_after_a_plan_found_it_in_step_is_put_back(con) -> None:
    """Each asset keeps the digest of its written values from one plan to the next; Hector gives
    an edited asset a new version, and that version's values are compared again."""
    load_cis(con, [ci("1", AssetTag="A-1", PurchaseDate="2024-03-01", Cost=329)])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser", price=329.0)
    add_asset(con, 9001, 40, "SN-1", c2_ref="1", title="PRN-1", asset_tag="A-1", acquisition_date="2024-03-01")
    assert plan(con).unchanged == 1
    con.execute("UPDATE hector_asset SET asset_tag = 'A-9', version = version + 1 WHERE id = 9001")
    changes = plan(con)
    assert changes.rows.select("action", "field", "old", "new").rows() == [("update_asset", "asset_tag", "A-9", "A-1")]


def test_changed_fields_update_field_by_field_and_a_new_model_moves_the_asset(con) -> None:
    load_cis(con, [ci("1", model="LaserJet M507", AssetTag="A-2")])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    add_asset(con, 9001, 40, "SN-1", c2_ref="1", title="PRN-1", asset_tag="A-1")
    changes = plan(con)
    assert actions(changes) == {"create_subcategory": ['["hp","laserjet m507","mono laser"]'],
                                "move_asset": ["1"], "update_asset": ["1"]}
    update = changes.rows.filter(pl.col("action") == "update_asset").select("field", "old", "new").rows()
    assert update == [("asset_tag", "A-1", "A-2")]
    move = changes.rows.filter(pl.col("action") == "move_asset").select("old", "new").row(0)
    assert move == ("HP / LaserJet M404 / Mono laser", "HP / LaserJet M507 / Mono laser")


def test_identify_by_links_one_candidate_and_reports_ambiguity(con) -> None:
    load_cis(con, [ci("1"), ci("2"), ci("3", SerialNumber="SHARED"), ci("4", SerialNumber="SHARED")])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    add_asset(con, 9001, 40, " sn-1 ", title="PRN-1")  # trimmed, case-insensitive
    add_asset(con, 9002, 40, "SN-2", title="PRN-2")
    add_asset(con, 9003, 40, "SN-2", title="PRN-2b")
    add_asset(con, 9004, 40, "shared", title="X")
    changes = plan(con)
    got = actions(changes)
    assert got["link_asset"] == ["1"]
    assert got["skip"] == ["2", "3", "4"]
    reasons = dict(changes.rows.filter(pl.col("action") == "skip").select("item", "reason").iter_rows())
    assert reasons["2"] == "identify_by value 'sn-2' matches several unlinked assets: 9002, 9003"
    assert reasons["3"] == "identify_by value 'shared' is shared by CIs 3, 4 and matches asset 9004"
    assert "create_asset" not in got



def test_a_large_category_plans_the_same_rows_through_a_relation(con, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small categories keep their assets and pairs and execute the change set once; large ones
    read them again where needed and stream it: the rows are the same."""
    load_cis(con, [ci("1", model="LaserJet M507", AssetTag="A-2"), ci("2"), ci("3", maker=" "), ci("4", status="retired")])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    add_asset(con, 9001, 40, "SN-1", c2_ref="1", title="PRN-1", asset_tag="A-1")
    add_asset(con, 9004, 40, "SN-4", c2_ref="4", title="PRN-4")
    small = plan(con)
    monkeypatch.setattr(reconcile, "SMALL_ITEMS", 0)
    large = plan(con)
    assert set(small.rows["action"]) == {"create_asset", "create_subcategory", "move_asset", "update_asset",
                                         "retire_asset", "skip"}
    assert_frame_equal(small.rows, large.rows)
    assert small.unchanged == large.unchanged == 0


def test_derive_keeps_its_rows_only_while_the_cis_and_the_mapping_stay_the_same(con) -> None:
    """A resync of unchanged CIs derives nothing again; any change to them, to the mapping or to
    the derived rows themselves derives them afresh."""
    rec = Reconciler.for_category(CATEGORY, ATTRIBUTES, default_stockroom="Main warehouse")
    load_cis(con, [ci("1", AssetTag="A-1"), ci("2", maker=" ")])

    def assets() -> list[tuple]:
        return con.execute("SELECT ci_id, fields FROM desired_asset ORDER BY ci_id").fetchall()

    first = rec.derive(con)
    assert (first.items, first.rejected, first.models) == (1, 1, 1)
    con.execute("UPDATE desired_asset SET fields = ['kept'] WHERE ci_id = '1'")  # shows whether derive ran
    assert rec.derive(con) == first and assets() == [("1", ["kept"])]

    con.execute("UPDATE c2_ci SET fields = map_concat(fields, MAP {'AssetTag': 'A-9'}) WHERE ci_id = '1'")
    assert rec.derive(con) == first and "A-9" in assets()[0][1]

    con.execute("DELETE FROM desired_asset")  # as a schema upgrade does with rows of an older format
    assert rec.derive(con) == first and "A-9" in assets()[0][1]

    load_cis(con, [ci("1", AssetTag="A-7", day=2)])  # listed a second time, modified later: it wins
    assert rec.derive(con) == first and "A-7" in assets()[0][1]

    con.execute("UPDATE desired_asset SET fields = ['kept'] WHERE ci_id = '1'")
    other = CategoryConfig.model_validate(SETTINGS | {"asset": {"asset_tag": "SerialNumber"}})
    Reconciler.for_category(other, ATTRIBUTES, default_stockroom="Main warehouse").derive(con)
    assert "SN-1" in assets()[0][1]

def test_a_derive_cut_short_leaves_the_last_one_as_it_was(con) -> None:
    """A derive replaces its rows in one transaction: one that fails half way leaves the desired
    rows, the listing's hashes and the derive's state of the last derive, to start from again."""
    rec = Reconciler.for_category(CATEGORY, ATTRIBUTES, default_stockroom="Main warehouse")
    load_cis(con, [ci("1", AssetTag="A-1"), ci("2")])
    rec.derive(con)

    def state() -> dict[str, list[tuple]]:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("desired_asset", "desired_model", "derived_ci", "derive_state")}

    before = state()
    load_cis(con, [ci("1", AssetTag="A-2", day=2)])
    con.execute("ALTER TABLE rejected_ci DROP COLUMN reason")  # written after the desired assets: it fails
    with pytest.raises(duckdb.Error):
        rec.derive(con)
    assert state() == before


def test_gone_and_retired_cis_retire_their_assets_only_on_full_reads(con) -> None:
    load_cis(con, [ci("1"), ci("2", status="retired")])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    add_asset(con, 9001, 40, "SN-1", c2_ref="1", title="PRN-1")
    add_asset(con, 9002, 40, "SN-2", c2_ref="2", title="PRN-2")
    add_asset(con, 9003, 40, "SN-3", c2_ref="3", title="PRN-3")
    assert actions(plan(con, full_read=True))["retire_asset"] == ["2", "3"]
    assert actions(plan(con, full_read=False))["retire_asset"] == ["2"]


def test_guard_refuses_wipes_with_the_numbers() -> None:
    changes = ChangeSet(pl.DataFrame({"action": ["retire_asset"] * 3, "item": list("abc")}), unchanged=7)
    summary = summarize(changes, linked=10)
    assert Guard(0.2, source_count=7, previous_source_count=10).refusal(summary) == (
        "the change set would retire or move 3 of 10 linked assets (30%), more than "
        "max_change_fraction 20%; nothing was written"
    )
    assert Guard(0.5, source_count=7, previous_source_count=10).refusal(summary) is None
    assert "empty category where the last snapshot had 500 CIs" in Guard(0.2, 0, 500).refusal(summary)


PHONES = CategoryConfig.model_validate(
    {
        "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
        "direction": "hector_to_c2",
        "model": {"maker": "Manufacturer", "model": "Model", "description": "Description"},
        "asset": {"title": "Name", "asset_tag": "AssetTag", "acquisition_date": "PurchaseDate"},
        "asset_attributes": {"Serial number": "SerialNumber"},
        "identify_by": {"c2": "SerialNumber", "hector": "Serial number"},
        "on_missing": "retire",
    }
)
C2_TYPES = {"Manufacturer": "text", "Model": "text", "Description": "text", "AssetTag": "text",
            "PurchaseDate": "date", "SerialNumber": "text"}


def plan_c2(con, category: CategoryConfig = PHONES, full_read: bool = True) -> ChangeSet:
    rec = Reconciler.for_category(category, ATTRIBUTES, "Main warehouse", C2_TYPES)
    rec.derive_c2(con)
    return rec.changes(con, Direction.HECTOR_TO_C2, full_read=full_read)


def test_assets_become_cis_named_from_their_title_with_model_fields_from_their_subcategory(con) -> None:
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    add_asset(con, 9001, 40, "SN-1", title="PRN-1", asset_tag="A-1", acquisition_date="2024-03-01")
    add_asset(con, 9002, 40, "SN-2", title="   ")  # no name for a CI
    add_asset(con, 9003, 40, "SN-3", title="PRN-3", acquisition_date="2024-02-30")
    changes = plan_c2(con)
    assert actions(changes) == {"create_ci": ["9001"], "skip": ["9002", "9003"]}
    created = dict(changes.rows.filter(pl.col("action") == "create_ci").select("field", "new").iter_rows())
    assert created == {"Name": "PRN-1", "Manufacturer": "HP", "Model": "LaserJet M404", "Description": "Mono laser",
                       "AssetTag": "A-1", "PurchaseDate": "2024-03-01", "SerialNumber": "SN-1"}
    reasons = dict(changes.rows.filter(pl.col("action") == "skip").select("item", "reason").iter_rows())
    assert reasons == {
        "9002": "title is empty, and C2 ITSM needs a name for the CI",
        "9003": "acquisition_date '2024-02-30' is not a date (YYYY-MM-DD), which C2 field PurchaseDate takes",
    }


def test_linked_assets_update_their_ci_field_by_field_and_retired_ones_retire_it(con) -> None:
    load_cis(con, [ci("c1", AssetTag="OLD", PurchaseDate="2024-03-01"), ci("c2"), ci("c3", SerialNumber="SN-7")])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    add_asset(con, 9001, 40, "SN-c1", c2_ref="c1", title="PRN-c1", asset_tag="NEW", acquisition_date="2024-03-01")
    add_asset(con, 9002, 40, "SN-c2", c2_ref="c2", title="PRN-c2", status="retired")
    add_asset(con, 9003, 40, "sn-7", title="PRN-c3")  # unlinked: identify_by finds c3
    add_asset(con, 9004, 40, "SN-9", c2_ref="gone", title="X")  # names a CI C2 ITSM does not list
    changes = plan_c2(con)
    got = actions(changes)
    assert got["retire_ci"] == ["9002"] and got["link_ci"] == ["9003"] and got["skip"] == ["9004"]
    update = changes.rows.filter(pl.col("action") == "update_ci").select("item", "target_id", "field", "old", "new").rows()
    # Hector owns every field here: once identified, c3 takes the asset's spelling of the serial.
    assert update == [("9001", "c1", "AssetTag", "OLD", "NEW"), ("9003", "c3", "SerialNumber", "SN-7", "sn-7")]


def test_a_ci_created_by_a_killed_run_is_found_again_not_created_twice(con) -> None:
    """The journal of creates (name, time) and the local link pair what the external ref cannot."""
    unlinked = PHONES.model_copy(update={"identify_by": None})
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    for n in (1, 2, 3):
        add_asset(con, 9000 + n, 40, f"SN-{n}", title=f"PRN-{n}")
    load_cis(con, [ci("c1", day=20) | {"name": "PRN-1"}, ci("c2", day=20) | {"name": "PRN-2"}])
    journal = datetime(2026, 11, 19, 23, 55, tzinfo=UTC)  # the killed run journalled 9001 and 9003
    con.execute("INSERT INTO pending_create VALUES ('printers', 9001, 'PRN-1', ?, 'r1'), "
                "('printers', 9003, 'PRN-3', ?, 'r1')", [journal, journal])
    con.execute("INSERT INTO link (category_key, ci_id, asset_id, linked_at, run_id) "
                "VALUES ('printers', 'c2', 9002, ?, 'r1')", [journal])  # linked, ref not written
    changes = plan_c2(con, unlinked)
    got = actions(changes)
    assert got["link_ci"] == ["9001", "9002"], "a CI the killed run made would be made twice"
    assert got["create_ci"] == ["9003"]  # journalled, but its CI never reached C2 ITSM
    reasons = dict(changes.rows.filter(pl.col("action") == "link_ci").select("item", "reason").iter_rows())
    assert "interrupted run" in reasons["9001"] and "not written yet" in reasons["9002"]


PER_FIELD = CategoryConfig.model_validate(
    {
        "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
        "direction": "per_field",
        "model": {k: {"c2": v, "direction": "c2_to_hector"}
                  for k, v in (("maker", "Manufacturer"), ("model", "Model"), ("description", "Description"))},
        "asset": {"title": {"c2": "Name", "direction": "c2_to_hector"},
                  "asset_tag": {"c2": "AssetTag", "direction": "hector_to_c2"}},
        "on_missing": "ignore",
    }
)


def test_per_field_tells_an_owner_change_from_drift_by_the_baseline(con) -> None:
    load_cis(con, [ci("1") | {"name": "PRN-1"}, ci("2") | {"name": "PRN-2-new"}, ci("3") | {"name": "PRN-3-c2"},
                   ci("4", AssetTag="C2-EDIT") | {"name": "PRN-4"}])
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    add_asset(con, 9001, 40, "SN-1", c2_ref="1", title="PRN-1-edited-in-hector")  # drift
    add_asset(con, 9002, 40, "SN-2", c2_ref="2", title="PRN-2")  # C2 ITSM renamed it: an update
    add_asset(con, 9003, 40, "SN-3", c2_ref="3", title="PRN-3-hector")  # both sides moved
    add_asset(con, 9004, 40, "SN-4", c2_ref="4", title="PRN-4", asset_tag="TAG-4")  # drift the other way
    agreed = datetime(2026, 11, 1, tzinfo=UTC)
    for ci_id, asset, field, value in [("1", 9001, "title", "PRN-1"), ("2", 9002, "title", "PRN-2"),
                                       ("3", 9003, "title", "PRN-3"), ("4", 9004, "asset_tag", "TAG-4")]:
        con.execute("INSERT INTO baseline VALUES ('printers', ?, ?, ?, ?, ?, 'r0')", [ci_id, asset, field, value, agreed])
    rec = Reconciler.for_category(PER_FIELD, ATTRIBUTES, "Main warehouse")
    rec.derive(con)
    rec.derive_c2(con)
    to_hector = rec.changes(con, Direction.C2_TO_HECTOR, full_read=True).rows.filter(pl.col("field") == "title")
    rows = {r["item"]: r for r in to_hector.select("item", "action", "new", "reason").to_dicts()}
    assert rows["1"]["action"] == "revert_drift" and rows["1"]["new"] == "PRN-1"
    assert rows["1"]["reason"] == ("drift: title was changed in Hector from 'PRN-1' to 'PRN-1-edited-in-hector', "
                                   "but C2 ITSM owns it; its value is put back")
    assert rows["2"]["action"] == "update_asset" and rows["2"]["reason"] is None
    assert rows["3"]["action"] == "update_asset" and "changed on both sides" in rows["3"]["reason"]
    to_c2 = rec.changes(con, Direction.HECTOR_TO_C2, full_read=True).rows
    assert to_c2.select("item", "action", "field", "old", "new").rows() == [
        ("9004", "revert_drift", "AssetTag", "C2-EDIT", "TAG-4")]
    # Values both sides hold now become the baseline; a drifted field keeps the agreed value.
    rec.agree(con, "r1")
    baseline = dict(con.execute(
        "SELECT ci_id || '/' || field, value FROM baseline WHERE field IN ('title', 'asset_tag')").fetchall())
    assert baseline["1/title"] == "PRN-1" and baseline["4/asset_tag"] == "TAG-4"


def test_the_guard_weighs_retired_cis_toward_c2_and_an_empty_hector_category() -> None:
    changes = ChangeSet(pl.DataFrame({"action": ["retire_ci"] * 4, "item": list("abcd")}), unchanged=6)
    summary = summarize(changes, linked=10, direction=Direction.HECTOR_TO_C2)
    guard = Guard(0.2, source_count=6, previous_source_count=10, direction=Direction.HECTOR_TO_C2)
    assert guard.refusal(summary) == (
        "the change set would retire or move 4 of 10 linked CIs (40%), more than max_change_fraction 20%; "
        "nothing was written"
    )
    empty = Guard(0.2, 0, 500, Direction.HECTOR_TO_C2).refusal(summary)
    assert empty and "Hector answered with an empty category where the last snapshot had 500 assets" in empty
