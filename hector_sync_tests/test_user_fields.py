"""C2 ITSM `user` fields (an e-mail address, c2-itsm-api.md) end to end.

An address is compared trimmed and whatever its case: `Jane.Doe@Example.com` in C2 ITSM and
`jane.doe@example.com` in Hector are one value, so nothing is written either way. A real change
of address is written, as the source holds it, trimmed. Toward C2 ITSM, a value that is not an
address (one @, a non-empty local part, a domain with a dot that is not its first or last
character, no white space) is skipped with the asset, the field, the value and the reason, and
never sent: C2 ITSM would answer 422.

First on small in-memory tables (the pure reconciliation, as test_reconcile), with properties
checked on random addresses; then the sample data and the C2 simulator's side of the contract;
then through Dagster against both simulators over HTTP, counting the writes they receive.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import duckdb
import polars as pl
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hector_sync.config import CategoryConfig, Direction
from hector_sync.reconcile import Reconciler
from hector_sync.reconcile.changes import ChangeSet
from hector_sync.reconcile.normalize import canon
from hector_sync.simulators.c2_app import field_problems
from hector_sync.simulators.sample_data import CATEGORIES, MESSY, SampleData, category, ci_id
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.simulators.wire import API
from hector_sync.store import create_schema
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import (
    PHONES, c2_cis, configure, hector_state, history, patch_asset, patch_ci, refs, reset, seed_phones, sync, writes,
)
from hector_sync_tests import test_directions
from hector_sync_tests.test_reconcile import add_subcategory, ci, load_cis
from hector_sync_tests.test_simulators import c2_session

# --------------------------------------------------------------------------------------------
# The pure reconciliation
# --------------------------------------------------------------------------------------------

MODEL = {"maker": "Manufacturer", "model": "Model", "description": "Description"}
ATTRIBUTES = {("asset", "Owner"): "text"}  # Hector attributes are text
C2_TYPES = {"Manufacturer": "text", "Model": "text", "Description": "text", "Owner": "user"}


def owned(direction: str) -> CategoryConfig:
    """Printers whose asset attribute Owner is the C2 user field Owner, flowing `direction`."""
    if direction == "per_field":  # the model and the title from C2 ITSM, the owner from Hector
        flows = {k: {"c2": v, "direction": "c2_to_hector"} for k, v in MODEL.items()}
        return CategoryConfig.model_validate({
            "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
            "direction": "per_field", "model": flows, "asset": {"title": {"c2": "Name", "direction": "c2_to_hector"}},
            "asset_attributes": {"Owner": {"c2": "Owner", "direction": "hector_to_c2"}}, "on_missing": "ignore",
        })
    return CategoryConfig.model_validate({
        "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
        "direction": direction, "model": MODEL, "asset": {"title": "Name"}, "asset_attributes": {"Owner": "Owner"},
        "on_missing": "ignore",
    })


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    create_schema(con)
    add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
    yield con
    con.close()


def add_asset(con: duckdb.DuckDBPyConnection, asset_id: int, c2_ref: str | None, owner: str | None) -> None:
    """An asset of the one subcategory, titled as its CI is named, with `owner` as its Owner."""
    con.execute(
        "INSERT INTO hector_asset (category_key, id, category_id, subcategory_id, stockroom_id, title, status,"
        " attributes, c2_ref, version) VALUES ('printers', ?, 12, 40, 1, ?, 'in_stock', map_from_entries(?), ?, 1)",
        [asset_id, f"PRN-{c2_ref or asset_id}", [] if owner is None else [{"key": "Owner", "value": owner}], c2_ref],
    )


def load(
    con: duckdb.DuckDBPyConnection, cis: dict[str, str | None], assets: dict[int, tuple[str | None, str | None]]
) -> None:
    """CIs by id with their Owner, and assets by id with (CI they name, Owner)."""
    load_cis(con, [ci(i, Owner=owner) for i, owner in cis.items()])
    for asset_id, (c2_ref, owner) in assets.items():
        add_asset(con, asset_id, c2_ref, owner)


def plan(con: duckdb.DuckDBPyConnection, category: CategoryConfig, direction: Direction) -> ChangeSet:
    rec = Reconciler.for_category(category, ATTRIBUTES, "Main warehouse", C2_TYPES)
    rec.derive(con)
    rec.derive_c2(con)
    return rec.changes(con, direction, full_read=True)


def rows(changes: pl.DataFrame, *columns: str) -> list[tuple]:
    """The rows that change or skip something, by item, action and field. Each test lists them
    all, so the pairs its `unchanged` count stands for are exactly the other ones."""
    return changes.sort("item", "action", "field").select("item", "action", *columns).rows()


def test_toward_hector_case_and_spaces_are_no_change_and_a_new_address_is_written_as_c2_holds_it(con) -> None:
    load(con, {
        "1": "Jane.Doe@Example.com", "2": " bob@example.com\u00a0", "3": "eve@example.com",
        "4": "  New.Owner@Example.com ", "5": "Jane Doe",
    }, {
        9001: ("1", "jane.doe@example.com"), 9002: ("2", "BOB@EXAMPLE.COM "), 9003: ("3", "mallory@example.com"),
        9004: ("4", "old@example.com"), 9005: ("5", "jane@example.com"),
    })
    changes = plan(con, owned("c2_to_hector"), Direction.C2_TO_HECTOR)
    assert changes.unchanged == 2  # 1 and 2
    assert rows(changes.rows, "field", "old", "new", "reason") == [
        ("3", "update_asset", "attributes.Owner", "mallory@example.com", "eve@example.com", None),
        ("4", "update_asset", "attributes.Owner", "old@example.com", "New.Owner@Example.com", None),
        ("5", "skip", "Owner", None, "Jane Doe", "Owner 'Jane Doe' is not an e-mail address"),
    ]


BAD_ADDRESSES = ("Jane Doe", "jane@localhost", "@example.com", "jane@", "jane@@example.com", "jane@exa mple.com",
                 "jane\u00a0doe@example.com", "jane@example.", "jane@.com", "a@b.com, c@d.com")


@pytest.mark.parametrize("bad", BAD_ADDRESSES)
def test_toward_c2_case_and_spaces_are_no_change_and_a_non_address_is_skipped_not_sent(con, bad: str) -> None:
    load(con, {"c1": "JANE.DOE@EXAMPLE.COM", "c2": "bob@example.com", "c3": "eve@example.com", "c4": "x@example.com"}, {
        9001: ("c1", " jane.doe@example.com "), 9002: ("c2", "Bob@Example.com"),
        9003: ("c3", " Eve.Other@example.com\t"),
        9004: ("c4", bad), 9005: (None, "Zoe.Silva@Example.com "), 9006: (None, bad),
    })
    changes = plan(con, owned("hector_to_c2"), Direction.HECTOR_TO_C2)
    assert changes.unchanged == 2  # 9001 and 9002
    reason = f"attributes.Owner '{bad}' is not an e-mail address, which C2 field Owner takes"
    assert rows(changes.rows.filter(pl.col("field") != "Name"), "target_id", "field", "old", "new", "reason") == [
        ("9003", "update_ci", "c3", "Owner", "eve@example.com", "Eve.Other@example.com", None),
        ("9004", "skip", None, "attributes.Owner", None, bad, reason),
        ("9005", "create_ci", None, "Description", None, "Mono laser", None),
        ("9005", "create_ci", None, "Manufacturer", None, "HP", None),
        ("9005", "create_ci", None, "Model", None, "LaserJet M404", None),
        ("9005", "create_ci", None, "Owner", None, "Zoe.Silva@Example.com", None),
        ("9006", "skip", None, "attributes.Owner", None, bad, reason),
    ]


def test_per_field_an_address_agreed_in_another_case_is_the_baseline_value(con) -> None:
    """The drift rule weighs addresses as the change set does: a case change is no change."""
    load(con, {"1": "JANE@EXAMPLE.COM", "2": "mallory@example.com", "3": "carol@example.com", "4": "ann@example.com"}, {
        9001: ("1", "jane@example.com"), 9002: ("2", "Bob@Example.com"), 9003: ("3", "dave@example.com"),
        9004: ("4", "Ann@Example.com"),
    })
    for ci_id_, asset_id, value in (("1", 9001, "jane@example.com"), ("2", 9002, "bob@example.com"),
                                    ("3", 9003, "CAROL@example.com")):  # no baseline for 4 yet
        con.execute("INSERT INTO baseline VALUES ('printers', ?, ?, 'attributes.Owner', ?, now(), 'r0')",
                    [ci_id_, asset_id, value])
    changes = plan(con, owned("per_field"), Direction.HECTOR_TO_C2)
    assert changes.unchanged == 2  # 9001 and 9004: C2 ITSM changed only the case
    assert rows(changes.rows, "old", "new", "reason") == [
        # C2 ITSM moved away from the address both agreed on: drift, and Hector's spelling goes back
        ("9002", "revert_drift", "mallory@example.com", "Bob@Example.com",
         "drift: Owner was changed in C2 ITSM from 'bob@example.com' to 'mallory@example.com', "
         "but Hector owns it; its value is put back"),
        # only Hector changed it (C2 ITSM holds the agreed address in another case): an update
        ("9003", "update_ci", "carol@example.com", "dave@example.com", None),
    ]
    rec = Reconciler.for_category(owned("per_field"), ATTRIBUTES, "Main warehouse", C2_TYPES)
    rec.agree(con, "r1")
    baseline = dict(con.execute("SELECT ci_id, value FROM baseline WHERE field = 'attributes.Owner'").fetchall())
    assert baseline["4"] == "ann@example.com", "an address both sides hold in different cases is agreed"


ADDRESS_ALPHABET = ("a", "Z", "é", "0", ".", "-", "_", "+", "@", " ", "\u00a0", "\t", "\u3000", "\u2028", "\x1f")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.text(alphabet=ADDRESS_ALPHABET, max_size=14) | st.from_regex(
    r"[a-zA-Z.]{1,5}@[a-z]{1,4}\.[a-z]{2,3}", fullmatch=True), min_size=1, max_size=40))
def test_the_sync_takes_as_an_address_exactly_what_the_c2_simulator_takes(values: list[str]) -> None:
    """What the sync sends, C2 ITSM accepts; what it skips, C2 ITSM would refuse (on the value
    trimmed, as the sync trims every value)."""
    owner = category("Printers").field_id("Owner")
    with duckdb.connect() as con:
        got = dict(con.execute(f"SELECT v, {canon('v', 'user')} FROM unnest($1::VARCHAR[]) t(v)", [values]).fetchall())
    for value in values:
        stripped = value.strip()
        accepted = bool(stripped) and not field_problems(category("Printers"), {owner: stripped})
        assert got[value] == (stripped if accepted else None), (value, got[value])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(local=st.from_regex(r"[a-z]{1,6}(\.[a-z]{1,6})?", fullmatch=True),
       domain=st.sampled_from(("example.com", "acme.co.uk")), seed=st.integers(0, 2**16),
       pads=st.tuples(st.sampled_from(("", " ", "\u00a0", "\t ")), st.sampled_from(("", " ", "\u3000"))))
def test_an_address_in_any_case_and_padding_is_one_value_both_ways(
    local: str, domain: str, seed: int, pads: tuple[str, str]
) -> None:
    """Whatever the case of its letters and the spaces around it, an address is the address:
    unchanged both ways; another address is one update."""
    address = f"{local}@{domain}"
    rng = random.Random(seed)
    variant = pads[0] + "".join(c.upper() if rng.random() < 0.5 else c for c in address) + pads[1]
    for direction in (Direction.C2_TO_HECTOR, Direction.HECTOR_TO_C2):
        with duckdb.connect() as con:
            create_schema(con)
            add_subcategory(con, 40, "HP", "LaserJet M404", "Mono laser")
            load(con, {"1": address, "2": variant, "3": address}, {9001: ("1", variant), 9002: ("2", address),
                                                                     9003: ("3", "other." + address)})
            changes = plan(con, owned(direction.value), direction)
        moved = {(r[0], r[1]) for r in rows(changes.rows)}
        assert changes.unchanged == 2  # 1 and 2, or 9001 and 9002
        assert moved == ({("3", "update_asset")} if direction is Direction.C2_TO_HECTOR else {("9003", "update_ci")})


# --------------------------------------------------------------------------------------------
# The sample data and the C2 simulator
# --------------------------------------------------------------------------------------------


def test_sample_owners_are_addresses_some_mixed_case_and_messy_where_documented() -> None:
    data, again = SampleData(reference=1_800_000_000), SampleData(reference=1_800_000_000)
    for spec in CATEGORIES:
        owner = spec.field_id("Owner")
        values = [data.ci_at(spec.name, i)["fields"].get(owner) for i in range(1000)]
        assert values == [again.ci_at(spec.name, i)["fields"].get(owner) for i in range(1000)], "not deterministic"
        if spec.name == "Servers":
            assert set(values) == {None}, "servers have no owner"
            continue
        present = [v for v in values if v is not None]
        assert not [v for v in present if field_problems(spec, {owner: v.strip()})], "an owner C2 ITSM would refuse"
        assert 800 < len(present) < 960
        mixed = [v for v in present if v != v.lower() and v != v.upper()]
        assert 0.03 < len(mixed) / len(present) < 0.2, mixed[:5]
        padded, upper = values[MESSY["padded_owner"]], values[MESSY["upper_owner"]]
        assert padded and padded != padded.strip()
        assert upper and upper == upper.upper() and "@" in upper


@pytest.fixture(scope="module")
def small_sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=30) as running:
        yield running


def test_the_c2_simulator_refuses_a_user_value_that_is_not_an_address_string(small_sims: RunningSimulators) -> None:
    session = c2_session(small_sims)
    printers = category("Printers")
    owner = printers.field_id("Owner")
    url = f"{small_sims.c2_url}{API}/cis/{ci_id('Printers', 1)}"
    version = session.get(url).json()["version"]
    for bad in ("Jane Doe", " jane@example.com ", "jane@localhost", "a@b@c.com", 7, ["jane@example.com"]):
        created = session.post(f"{small_sims.c2_url}{API}/cmdbs/cmdb-1/cis",
                               json={"category_id": printers.id, "name": "PRN-new", "fields": {owner: bad}})
        patched = session.patch(url, json={"fields": {owner: bad}}, headers={"If-Match": str(version)})
        for answer in (created, patched):
            assert answer.status_code == 422, (bad, answer.text)
            assert answer.json()["error"]["code"] == "invalid_field"
            assert answer.json()["error"]["details"] == [
                {"field": owner, "reason": "a user field takes an e-mail address"}]
    assert session.get(url).json()["version"] == version, "a refused write changed the CI"
    good = session.patch(url, json={"fields": {owner: "Jane.Doe@Example.com"}}, headers={"If-Match": str(version)})
    assert good.status_code == 200 and good.json()["fields"][owner] == "Jane.Doe@Example.com"


# --------------------------------------------------------------------------------------------
# End to end, through Dagster, against both simulators over HTTP
# --------------------------------------------------------------------------------------------

OWNED_PHONES = PHONES | {"asset_attributes": {"Serial number": "SerialNumber", "Owner": "Owner"}}
sims = test_directions.sims  # the fixture: 40 printers (the messy Owner records among them), no phones
no_writes = test_directions.no_writes


def owner_of(ci: dict) -> str | None:
    return ci["fields"].get("Owner")


def test_c2_to_hector_writes_owners_trimmed_and_ignores_a_change_of_case_on_either_side(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims, {
        "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
        "direction": "c2_to_hector", "model": MODEL, "asset": {"title": "Name"},
        "asset_attributes": {"Owner": "Owner"}, "on_missing": "ignore",
    })
    sync(config, "printers")
    cis = {ci["id"]: ci for ci in c2_cis(config, "Printers")}
    by_ref = {refs(a)[0]: a for a in hector_state(config, "Printers")[1] if refs(a)}
    assert len(by_ref) > 25
    for ci_id_, asset in by_ref.items():  # as C2 ITSM holds it, trimmed
        assert asset["attributes"].get("Owner") == ((owner_of(cis[ci_id_]) or "").strip() or None), asset
    padded, upper = (ci_id("Printers", MESSY[k]) for k in ("padded_owner", "upper_owner"))
    assert owner_of(cis[padded]) != by_ref[padded]["attributes"]["Owner"] == owner_of(cis[padded]).strip()
    assert by_ref[upper]["attributes"]["Owner"] == owner_of(cis[upper]) == owner_of(cis[upper]).upper()

    lower = [i for i, a in by_ref.items() if a["attributes"].get("Owner", "").islower() and i != padded]
    in_c2, in_hector, moved = lower[:3]
    patch_ci(config, in_c2, Owner=owner_of(cis[in_c2]).upper())  # a person retypes it in C2 ITSM
    patch_asset(config, by_ref[in_hector]["id"], attributes={"Owner": f" {owner_of(cis[in_hector]).title()}  "})
    reset(sims.c2_url, sims.hector_url)
    sync(config, "printers")
    assert no_writes(sims) == {"c2": {}, "hector": {}}, "a change of case was written"

    patch_ci(config, moved, Owner="Someone.Else@Example.com")
    reset(sims.c2_url, sims.hector_url)
    sync(config, "printers")
    assert no_writes(sims) == {"c2": {}, "hector": {"PATCH /api/v1/assets/{row_id}": 1}}
    now = {refs(a)[0]: a for a in hector_state(config, "Printers")[1] if refs(a)}
    assert now[moved]["attributes"]["Owner"] == "Someone.Else@Example.com"
    assert now[in_c2]["attributes"]["Owner"] == by_ref[in_c2]["attributes"]["Owner"], "left as it was"
    [update] = history(config, "action = 'update_asset'", [])
    assert update[:5] == (moved, "update_asset", "attributes.Owner", owner_of(cis[moved]), "Someone.Else@Example.com")


def test_hector_to_c2_sends_addresses_trimmed_ignores_case_and_skips_what_is_not_an_address(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims, OWNED_PHONES)
    phones = seed_phones(config, 6)
    owners = ["Jane.Doe@Example.com", "  bob.smith@example.com ", "Jane Doe", "carol@example.com", None,
              "dave@example.com"]
    for phone, owner in zip(phones, owners, strict=True):
        if owner is not None:
            patch_asset(config, phone["id"], attributes={"Owner": owner})
    reset(sims.c2_url, sims.hector_url)
    sync(config, "phones")

    assert writes(sims.c2_url) == {"POST /api/v1/cmdbs/{cmdb_id}/cis": 5}, "the asset without an address was sent"
    assert "422" not in stats_by_status(sims.c2_url)
    cis = {ci["name"]: ci for ci in c2_cis(config, "Phones")}
    assert phones[2]["title"] not in cis
    assert [owner_of(cis[p["title"]]) for p in phones if p["title"] in cis] == [
        "Jane.Doe@Example.com", "bob.smith@example.com", "carol@example.com", None, "dave@example.com"]
    reason = "attributes.Owner 'Jane Doe' is not an e-mail address, which C2 field Owner takes"
    skipped = history(config, "category_key = 'phones' AND outcome = 'skipped'", [])
    assert [(r[0], r[2], r[4], r[6]) for r in skipped] == [
        (str(phones[2]["id"]), "attributes.Owner", "Jane Doe", reason)]

    patch_ci(config, cis[phones[0]["title"]]["id"], Owner="JANE.DOE@EXAMPLE.COM")  # case, in C2 ITSM
    patch_asset(config, phones[3]["id"], attributes={"Owner": "Carol@Example.COM"})  # case, in Hector
    reset(sims.c2_url, sims.hector_url)
    sync(config, "phones")
    assert no_writes(sims) == {"c2": {}, "hector": {}}, "a change of case was written"

    patch_asset(config, phones[5]["id"], attributes={"Owner": "dave.new@example.com"})  # a real change
    patch_asset(config, phones[1]["id"], attributes={"Owner": "bob at example dot com"})  # linked, now no address
    reset(sims.c2_url, sims.hector_url)
    sync(config, "phones")
    assert no_writes(sims) == {"c2": {"PATCH /api/v1/cis/{ci}": 1}, "hector": {}}
    assert "422" not in stats_by_status(sims.c2_url)
    now = {ci["name"]: ci for ci in c2_cis(config, "Phones")}
    assert owner_of(now[phones[5]["title"]]) == "dave.new@example.com"
    assert owner_of(now[phones[1]["title"]]) == "bob.smith@example.com", "C2 ITSM keeps the address it had"
    latest = history(config, "item = ? AND outcome = 'skipped'", [str(phones[1]["id"])])
    assert [(r[2], r[4], r[6]) for r in latest] == [
        ("attributes.Owner", "bob at example dot com",
         "attributes.Owner 'bob at example dot com' is not an e-mail address, which C2 field Owner takes")]


def stats_by_status(url: str) -> dict[str, int]:
    return requests.get(f"{url}/_sim/stats", timeout=5).json()["by_status"]
