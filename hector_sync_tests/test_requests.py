"""Each change row carries the request it makes: method, target and typed JSON body, written at
plan time from small in-memory tables, and sent by the writeback exactly as stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl
import pytest
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from hector_sync.c2 import C2Client
from hector_sync.config import TO_C2, TO_HECTOR, CategoryConfig, SyncConfig, load_config
from hector_sync.reconcile import Reconciler
from hector_sync.reconcile.mapping import ApiNames
from hector_sync.reconcile.requests import PER_TARGET
from hector_sync.simulators.sample_data import ci_id
from hector_sync.simulators.serve import start_simulators
from hector_sync.store import Store, create_schema
from hector_sync.sync import CategorySync, open_clients
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import patch_ci, sync

API = ApiNames(
    cmdb_id="cmdb-1", c2_category_id="cat-7", hector_category_id=12, stockroom_id=3,
    c2_field_ids={"Manufacturer": "f-1", "Model": "f-2", "Description": "f-3", "AssetTag": "f-4",
                  "SerialNumber": "f-5", "Cost": "f-6"},
    attribute_names={("asset", "Serial number"): "Serial number ", ("asset", "Cost"): "Cost"},
)
ATTRIBUTES = {("asset", "Serial number"): "text", ("asset", "Cost"): "number", ("asset", "Rack units"): "number",
              ("asset", "Location"): "text"}
C2_TYPES = {"Manufacturer": "text", "Model": "text", "Description": "text", "AssetTag": "text",
            "SerialNumber": "text", "Cost": "number"}
MAPPING = {
    "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
    "model": {"maker": "Manufacturer", "model": "Model", "description": "Description"},
    "asset_attributes": {"Serial number": "SerialNumber", "Cost": "Cost"},
    "identify_by": {"c2": "SerialNumber", "hector": "Serial number"}, "on_missing": "retire",
}
TO_HECTOR_MAPPING = CategoryConfig.model_validate(MAPPING | {"direction": "c2_to_hector"})
TO_C2_MAPPING = CategoryConfig.model_validate(
    MAPPING | {"direction": "hector_to_c2", "asset": {"title": "Name", "asset_tag": "AssetTag"}, "identify_by": None})


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_schema(con)
    return con


def add_ci(con: duckdb.DuckDBPyConnection, ci: str, model: str = "LaserJet M404", status: str = "active",
           **fields: str) -> None:
    values = {"Manufacturer": "HP", "Model": model, "Description": "Mono laser", "SerialNumber": f"SN-{ci}"} | fields
    con.execute("INSERT INTO c2_ci VALUES ('printers', ?, ?, ?, ?, 4, map_from_entries(?))",
                [ci, f"PRN-{ci}", status, datetime(2026, 11, 1, tzinfo=UTC),
                 [{"key": k, "value": v} for k, v in values.items()]])


def add_asset(con: duckdb.DuckDBPyConnection, asset: int, c2_ref: str | None, attributes: dict[str, str],
              refs: list[dict[str, str]], **columns: str) -> None:
    values = {"title": f"PRN-{asset}", "status": "in_stock"} | columns
    con.execute(
        "INSERT INTO hector_asset (category_key, id, category_id, subcategory_id, stockroom_id, title, asset_tag, status,"
        " attributes, c2_ref, external_refs, version) VALUES ('printers', ?, 12, 40, 3, ?, ?, ?, map_from_entries(?), ?, ?, 7)",
        [asset, values["title"], values.get("asset_tag"), values["status"],
         [{"key": k, "value": v} for k, v in attributes.items()], c2_ref, json.dumps(refs)])


def requests_of(changes: pl.DataFrame, action: str) -> dict[str, tuple[str, str, int | None, Any]]:
    """Item → (method, target, If-Match version, body) of the call each row of `action` belongs
    to: the request sits on the call's first row only (per target for PATCHes of one asset or
    CI, else per item), and every call has exactly one."""
    call = pl.when(pl.col("action").is_in(PER_TARGET[TO_HECTOR] + PER_TARGET[TO_C2])).then(
        pl.concat_str(pl.lit("target:"), "target_id")).otherwise(pl.concat_str(pl.lit("item:"), "item"))
    keyed = changes.with_columns(call=call)
    leads = keyed.filter(pl.col("method").is_not_null())
    assert leads["call"].is_unique().all(), "a call carries more than one request"
    rows = keyed.filter(pl.col("action") == action).select("item", "call").unique().join(
        leads.select("call", "method", "target", "target_version", "body"), on="call", how="left")
    return {item: (method, target, version, json.loads(body))
            for item, _, method, target, version, body in rows.rows()}


def test_creates_and_a_merged_patch_toward_hector_carry_typed_complete_bodies(con) -> None:
    con.execute("INSERT INTO hector_subcategory (category_key, id, category_id, maker, model, description, attributes,"
                " version) VALUES ('printers', 40, 12, 'HP', 'LaserJet M404', 'Mono laser', MAP {}, 1)")
    add_ci(con, "1", Cost="1200")  # an existing model
    add_ci(con, "2", model="LaserJet M507", Cost="99.5")  # a model the same plan creates
    add_ci(con, "3", Cost="5")  # identify_by finds asset 9003
    add_ci(con, "4", Manufacturer=" ")  # skipped: Hector needs a maker
    add_ci(con, "5", status="retired")
    add_asset(con, 9003, None, {"Serial number": "sn-3", "Rack units": "2", "Location": "Room 4"},
              [{"source": "sap", "id": "S-1"}], title="PRN-3")
    add_asset(con, 9005, "5", {"Serial number": "SN-5"}, [{"source": "c2", "id": "5"}])
    rec = Reconciler.for_category(TO_HECTOR_MAPPING, ATTRIBUTES, "Main warehouse", C2_TYPES, API)
    rec.derive(con)
    changes = rec.changes(con, TO_HECTOR, full_read=True).rows

    creates = requests_of(changes, "create_asset")
    assert creates["1"] == ("POST", "/assets", None, {
        "title": "PRN-1", "attributes": {"Serial number ": "SN-1", "Cost": 1200}, "subcategory_id": 40,
        "stockroom_id": 3, "external_refs": [{"source": "c2", "id": "1"}]})
    assert creates["2"][3]["subcategory_id"] is None  # the writer fills in what the subcategory create answers
    assert creates["2"][3]["attributes"]["Cost"] == 99.5
    assert requests_of(changes, "create_subcategory") == {'["hp","laserjet m507","mono laser"]': (
        "POST", "/subcategories", None, {"category_id": 12, "maker": "HP", "model": "LaserJet M507",
                                         "description": "Mono laser"})}
    # link and update of one asset: one PATCH, its other attributes and refs kept, each typed
    patch = ("PATCH", "/assets/9003", 7, {
        "attributes": {"Serial number ": "SN-3", "Cost": 5, "Rack units": 2, "Location": "Room 4"},
        "external_refs": [{"source": "sap", "id": "S-1"}, {"source": "c2", "id": "3"}]})
    assert requests_of(changes, "link_asset") == {"3": patch}
    assert requests_of(changes, "update_asset") == {"3": patch}
    assert requests_of(changes, "retire_asset") == {"5": ("PATCH", "/assets/9005", 7, {"status": "retired"})}
    assert changes.filter(pl.col("action") == "skip")[["method", "target", "body"]].null_count().row(0) == (1, 1, 1)


def test_ci_create_and_update_carry_field_ids_and_typed_values(con) -> None:
    con.execute("INSERT INTO hector_subcategory (category_key, id, category_id, maker, model, description, attributes,"
                " version) VALUES ('printers', 40, 12, 'HP', 'LaserJet M404', 'Mono laser', MAP {}, 1)")
    add_asset(con, 9001, None, {"Serial number": "SN-1", "Cost": "1200"}, [], asset_tag="A-1")
    add_asset(con, 9002, "c2", {"Serial number": "SN-c2"}, [{"source": "c2", "id": "c2"}],
              title="PRN-c2", asset_tag="NEW")
    add_ci(con, "c2", AssetTag="OLD")
    rec = Reconciler.for_category(TO_C2_MAPPING, ATTRIBUTES, "Main warehouse", C2_TYPES, API)
    rec.derive_c2(con)
    changes = rec.changes(con, TO_C2, full_read=True).rows

    assert requests_of(changes, "create_ci") == {"9001": ("POST", "/cmdbs/cmdb-1/cis", None, {
        "category_id": "cat-7", "name": "PRN-9001",
        "fields": {"f-1": "HP", "f-2": "LaserJet M404", "f-3": "Mono laser", "f-4": "A-1", "f-5": "SN-1",
                   "f-6": 1200}})}
    assert requests_of(changes, "update_ci") == {"9002": ("PATCH", "/cis/c2", 4, {"fields": {"f-4": "NEW"}})}


def test_an_undo_row_carries_the_request_that_takes_the_change_back(con) -> None:
    con.execute("INSERT INTO hector_subcategory (category_key, id, category_id, maker, model, description, attributes,"
                " version) VALUES ('printers', 40, 12, 'HP', 'LaserJet M404', 'Mono laser', MAP {}, 1)")
    add_ci(con, "1", Cost="12")
    add_asset(con, 9001, "1", {"Serial number": "SN-1", "Cost": "12"}, [{"source": "c2", "id": "1"}])
    con.execute("INSERT INTO change_history (run_id, category_key, direction, action, item, target_id, field, old, new,"
                " outcome, recorded_at) VALUES ('r1', 'printers', 'c2_to_hector', 'update_asset', '1', '9001',"
                " 'attributes.Cost', '10.0', '12.0', 'updated', ?)", [datetime(2026, 11, 2, tzinfo=UTC)])
    rec = Reconciler.for_category(TO_HECTOR_MAPPING, ATTRIBUTES, "Main warehouse", C2_TYPES, API)
    undo = rec.undo(con, TO_HECTOR, "r1").rows
    assert requests_of(undo, "update_asset") == {"1": (
        "PATCH", "/assets/9001", 7, {"attributes": {"Serial number ": "SN-1", "Cost": 10}})}


# --- end to end: what the simulator receives is the body the plan stored ------------------------


@pytest.fixture
def config(write_config: WriteConfig) -> Iterator[SyncConfig]:
    """The demo configuration on simulators of 60 CIs a category, running for the test."""
    with start_simulators(size=60) as sims:
        yield load_config(write_config(sims.c2_url, sims.hector_url))


def test_the_simulator_receives_exactly_the_stored_request(config: SyncConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    sync(config, "printers")
    edited = ci_id("Printers", 52)  # an ordinary CI, past every messy one
    patch_ci(config, edited, Location="Montréal – 3e étage", AssetTag="A-NEW-12")
    with C2Client.from_settings(config.c2) as c2:
        printers = next(c.id for c in c2.list_categories("cmdb-1") if c.name == "Printers")
        ids = {f.name: f.id for f in c2.list_fields("cmdb-1", printers)}
        template = c2.get_ci(edited)
        assert template is not None
        fields = {**template["fields"], ids["SerialNumber"]: "SN-REQUESTS-1", ids["AssetTag"]: "A-REQUESTS-1"}
        new_ci = str(c2.create_ci("cmdb-1", printers, "PRN-REQUESTS-1", fields)["id"])

    received: list[tuple[str, str, dict[str, str], Any]] = []
    send = HTTPAdapter.send

    def recording(adapter: HTTPAdapter, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        if request.method in ("POST", "PATCH") and not (request.path_url or "").endswith("/auth/login"):
            received.append((request.method, request.path_url or "", dict(request.headers), json.loads(request.body or b"")))
        return send(adapter, request, *args, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", recording)
    with open_clients(config) as (c2, hector):
        steps = CategorySync(config, config.category("printers"), Store(config.storage.duckdb_path), c2, hector,
                             log=lambda _: None)
        steps.resolve_catalog()
        steps.snapshot_c2("full")
        steps.snapshot_hector("full")
        steps.derive(TO_HECTOR)
        plan, _ = steps.plan(TO_HECTOR)
        steps.apply(TO_HECTOR)

    stored = Store(config.storage.duckdb_path).query(
        "SELECT item, method, target, target_version, body FROM change_set WHERE plan_id = ? AND item IN (?, ?) "
        "AND method IS NOT NULL",
        [plan.plan_id, edited, new_ci])
    assert stored.height == 2, stored
    calls = [(method, path, body) for method, path, _, body in received]
    for item, method, target, version, body in stored.rows():
        assert (method, "/api/v1" + target, json.loads(body)) in calls, item
    patched = next(r for r in received if r[1] == "/api/v1" + stored.filter(pl.col("item") == edited)["target"].item())
    assert patched[2]["If-Match"] == str(stored.filter(pl.col("item") == edited)["target_version"].item())
    assert patched[3]["attributes"]["Location"] == "Montréal – 3e étage"
    assert "Serial number" in patched[3]["attributes"]  # sent whole, not only what changed
