"""Hector → C2 ITSM, per_field, and the rules that keep a two-way sync from flipping values,
duplicating items or wiping an inventory: end to end through Dagster, against both simulators
over HTTP, with the results read back through the two APIs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hector_sync.cli import main
from hector_sync.config import SyncConfig, load_config
from hector_sync.hector import HectorClient
from hector_sync.runner import run_sync
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import (
    PHONES, PRINTERS_PER_FIELD, c2_cis, configure, hector_state, history, kill_when, patch_asset, patch_ci, refs, reset,
    seed_phones, sync, writes,
)

HECTOR_SYNC = str(Path(sys.executable).with_name("hector-sync"))


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """C2 ITSM with no phones (Hector is their source here) and 40 printers."""
    with start_simulators(size=40, sizes={"Phones": 0}) as running:
        yield running



def no_writes(sims: RunningSimulators) -> dict[str, dict[str, int]]:
    return {"c2": writes(sims.c2_url), "hector": writes(sims.hector_url)}


def assert_one_to_one(config: SyncConfig, c2_category: str, hector_category: str) -> tuple[list[dict], list[dict]]:
    """Every live asset holds exactly one c2 ref, no two assets share a CI, every ref is a CI."""
    cis = c2_cis(config, c2_category)
    _, assets, _ = hector_state(config, hector_category)
    live = [a for a in assets if a["status"] != "retired"]
    assert all(len(refs(a)) == 1 for a in live), [a for a in live if len(refs(a)) != 1][:3]
    held = Counter(r for a in assets for r in refs(a))
    assert not [ci for ci, n in held.items() if n > 1], "a CI is the CI of two assets"
    ci_ids = Counter(ci["id"] for ci in cis)
    assert set(held) <= set(ci_ids), "an asset names a CI that does not exist"
    return cis, assets


def test_hector_to_c2_makes_cis_links_them_and_then_writes_only_what_changed(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims, PHONES)
    seeded = seed_phones(config, 30)
    sync(config, "phones")

    cis, assets = assert_one_to_one(config, "Phones", "Phones")
    assert len(cis) == 30
    models, _, _ = hector_state(config, "Phones")
    by_id = {ci["id"]: ci for ci in cis}
    for asset in assets:
        ci = by_id[refs(asset)[0]]
        model = models[asset["subcategory_id"]]
        assert ci["name"] == asset["title"]
        assert ci["fields"] == {
            "Manufacturer": model["maker"], "Model": model["model"], "Description": model["description"],
            "AssetTag": asset["asset_tag"], "PurchaseDate": asset["acquisition_date"],
            "SerialNumber": asset["attributes"]["Serial number"],
        }

    reset(sims.c2_url, sims.hector_url)
    sync(config, "phones")
    assert no_writes(sims) == {"c2": {}, "hector": {}}, "a second sync wrote something"

    changed = seeded[7]
    patch_asset(config, changed["id"], asset_tag="T-CHANGED")
    ci_id = next(refs(a)[0] for a in assets if a["id"] == changed["id"])
    before = {ci["id"]: ci for ci in c2_cis(config, "Phones")}
    reset(sims.c2_url, sims.hector_url)
    sync(config, "phones", full=False)

    assert no_writes(sims) == {"c2": {"PATCH /api/v1/cis/{ci}": 1}, "hector": {}}
    after = {ci["id"]: ci for ci in c2_cis(config, "Phones")}
    assert after[ci_id]["fields"] == before[ci_id]["fields"] | {"AssetTag": "T-CHANGED"}
    assert after[ci_id]["version"] == before[ci_id]["version"] + 1
    assert {k: v for k, v in after.items() if k != ci_id} == {k: v for k, v in before.items() if k != ci_id}
    rows = history(config, "category_key = 'phones' AND action = 'update_ci'", [])
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [
        (str(changed["id"]), "AssetTag", changed["asset_tag"], "T-CHANGED", "updated")]

    # A retired asset retires its CI (on_missing: retire).
    patch_asset(config, seeded[3]["id"], status="retired")
    sync(config, "phones", full=False)
    retired = next(refs(a)[0] for a in assets if a["id"] == seeded[3]["id"])
    assert {ci["id"]: ci["status"] for ci in c2_cis(config, "Phones")}[retired] == "retired"


def test_per_field_each_field_flows_from_its_owner_and_drift_is_put_back(
    write_config: WriteConfig, sims: RunningSimulators, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(write_config, sims, PRINTERS_PER_FIELD)
    cis = {ci["id"]: ci for ci in c2_cis(config, "Printers")}
    # Hector already holds five of these printers, entered by hand: other tags and dates, an
    # older title, the wrong model, and no link; the serial number is how they are recognised.
    known = [ci for ci in cis.values() if ci["status"] == "active" and ci["fields"].get("SerialNumber")][30:35]
    with HectorClient.from_settings(config.hector) as hector:
        other = hector.create_subcategory({"category_id": 12, "maker": "Brother", "model": "HL-L2350DW",
                                           "description": "Compact mono laser"})["id"]
        hand = {ci["id"]: hector.create_asset({
            "subcategory_id": other, "stockroom_id": 1, "title": f"old name {n}", "asset_tag": f"HAND-{n}",
            "acquisition_date": "2023-05-0" + str(n + 1), "attributes": {"Serial number": ci["fields"]["SerialNumber"]}})
            for n, ci in enumerate(known)}

    sync(config, "printers")

    # One sync: C2-owned fields are in Hector, Hector-owned fields are in C2 ITSM.
    cis_after = {ci["id"]: ci for ci in c2_cis(config, "Printers")}
    models, assets, _ = hector_state(config, "Printers")
    by_ref = {refs(a)[0]: a for a in assets if refs(a)}
    for ci_id, asset in hand.items():
        now = by_ref[ci_id]
        assert now["id"] == asset["id"], "the hand-entered asset was linked, not duplicated"
        ci = cis_after[ci_id]
        model = models[now["subcategory_id"]]
        assert (model["maker"], model["model"]) == (ci["fields"]["Manufacturer"].strip(), ci["fields"]["Model"].strip())
        assert now["title"] == ci["name"]
        assert (ci["fields"]["AssetTag"], ci["fields"]["PurchaseDate"]) == (asset["asset_tag"], asset["acquisition_date"])

    # Each side's own field propagates: a model from C2 ITSM, an asset tag from Hector.
    ci_a, ci_b, ci_c = list(hand)[:3]
    patch_ci(config, ci_a, Model="LaserJet M507")
    patch_asset(config, by_ref[ci_b]["id"], asset_tag="HAND-NEW")
    # And a C2-owned field written in Hector: the title.
    patch_asset(config, by_ref[ci_c]["id"], title="renamed by hand in Hector")

    with pytest.raises(SystemExit) as planned:
        main(["--config", str(config.source), "plan", "--category", "printers"])
    assert planned.value.code == 0
    printed = capsys.readouterr().out
    assert "printers (c2_to_hector):" in printed and "printers (hector_to_c2):" in printed
    assert f"drift on {ci_c}: drift: title was changed in Hector from '{cis[ci_c]['name']}' to " \
           "'renamed by hand in Hector', but C2 ITSM owns it; its value is put back" in printed

    sync(config, "printers")
    models, assets, _ = hector_state(config, "Printers")
    by_ref = {refs(a)[0]: a for a in assets if refs(a)}
    assert models[by_ref[ci_a]["subcategory_id"]]["model"] == "LaserJet M507"
    assert {ci["id"]: ci for ci in c2_cis(config, "Printers")}[ci_b]["fields"]["AssetTag"] == "HAND-NEW"
    assert by_ref[ci_c]["title"] == cis[ci_c]["name"], "the drift was not put back"
    drift = history(config, "action = 'revert_drift'", [])
    assert [(r[0], r[2], r[4], r[5]) for r in drift] == [(ci_c, "title", cis[ci_c]["name"], "reverted")]

    for _ in range(3):
        reset(sims.c2_url, sims.hector_url)
        sync(config, "printers")
        assert no_writes(sims) == {"c2": {}, "hector": {}}, "a value is echoing between the two systems"


def test_losing_the_duckdb_file_makes_no_duplicate_anywhere(write_config: WriteConfig, sims: RunningSimulators) -> None:
    config = configure(write_config, sims, PHONES, PRINTERS_PER_FIELD)
    seed_phones(config, 25)
    sync(config, "phones", "printers")
    counts = (len(c2_cis(config, "Phones")), len(hector_state(config, "Printers")[1]))

    for leftover in Path(config.storage.duckdb_path).parent.glob(Path(config.storage.duckdb_path).name + "*"):
        leftover.unlink()
    reset(sims.c2_url, sims.hector_url)
    sync(config, "phones", "printers")

    assert no_writes(sims) == {"c2": {}, "hector": {}}, "the links were not found again from the external refs"
    assert (len(c2_cis(config, "Phones")), len(hector_state(config, "Printers")[1])) == counts
    assert_one_to_one(config, "Phones", "Phones")
    assert_one_to_one(config, "Printers", "Printers")


def test_a_writeback_killed_halfway_through_2000_creates_ends_with_2000_items(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims, PHONES)
    seed_phones(config, 2000)
    # Some latency widens the window so the kill lands in the middle of the CI creates.
    requests.put(f"{sims.c2_url}/_sim/faults", json={"latency_s": 0.002}, timeout=5).raise_for_status()
    proc = subprocess.Popen([HECTOR_SYNC, "--config", str(config.source), "sync", "--category", "phones"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    kill_when(proc, lambda: writes(sims.c2_url).get("POST /api/v1/cmdbs/{cmdb_id}/cis", 0) >= 700)
    made = writes(sims.c2_url)["POST /api/v1/cmdbs/{cmdb_id}/cis"]
    assert 700 <= made < 2000, "the kill missed the writeback"

    requests.put(f"{sims.c2_url}/_sim/faults", json={}, timeout=5).raise_for_status()
    sync(config, "phones")

    cis, assets = assert_one_to_one(config, "Phones", "Phones")
    assert len(cis) == 2000 and len({ci["name"] for ci in cis}) == 2000
    assert len(assets) == 2000
    store = Store(config.storage.duckdb_path)
    assert store.query("SELECT count(*) FROM pending_create").item() == 0


def test_an_empty_c2_category_holds_the_writeback_until_allowed(write_config: WriteConfig, tmp_path: Path) -> None:
    with start_simulators(size=40, sizes={"Printers": 500}) as sims:
        def edit(data: dict) -> None:
            category = next(c for c in data["categories"] if c["key"] == "printers")
            data["categories"] = [category | {"on_missing": "retire"}]

        config = load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))
        sync(config, "printers")
        _, linked, _ = hector_state(config, "Printers")
        assert len(linked) > 400

        requests.put(f"{sims.c2_url}/_sim/faults", json={"empty_categories": ["cat-7"]}, timeout=5).raise_for_status()
        [held] = run_sync(config, str(config.source), ["printers"], full=True)
        assert not held.success
        assert "C2 ITSM answered with an empty category where the last snapshot had 500 CIs" in (held.error or "")
        assert all(a["status"] != "retired" for a in hector_state(config, "Printers")[1]), "the guard let a retire through"

        [allowed] = run_sync(config, str(config.source), ["printers"], full=True, allow_large_change=True)
        assert allowed.success, allowed.error
        assert all(a["status"] == "retired" for a in hector_state(config, "Printers")[1] if refs(a))
