"""Messy data and a schema changed under the sync: each bad item is skipped with a reason naming
the CI, the field and the value; a category whose names no longer exist fails saying which;
everything else syncs, and nothing crashes.

The bad values are written into C2 ITSM through its API (and its administrator endpoints, for
what an administrator would change), then one sync runs through Dagster over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.hector import HectorClient
from hector_sync.runner import run_sync
from hector_sync.simulators.sample_data import ORDINARY_FROM, ci_id
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import c2_cis, hector_state, history, naive_valid, patch_ci, refs

LONG = "PRN-" + "x" * 10_240
CONTROL = "PRN-\x00nul\x07bell\x1b[0m\ttab\x7fdel"
WORLD = "طابعة 🖨️ הדפסה — 打印机 ✓"
BLANK_MAKER = "\u00a0\t "


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=ORDINARY_FROM + 40) as running:
        yield running


@pytest.fixture
def config(write_config: WriteConfig, sims: RunningSimulators) -> SyncConfig:
    def edit(data: dict) -> None:
        for category in data["categories"]:
            if category["key"] in ("printers", "monitors"):  # laptops keep Location, deleted below
                del category["asset_attributes"]["Location"]

    return load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))


def printer(n: int) -> str:
    return ci_id("Printers", ORDINARY_FROM + n)


def mess_up(config: SyncConfig, sims: RunningSimulators) -> None:
    """What an inventory really holds, and what administrators change on both sides."""
    with C2Client.from_settings(config.c2) as c2:
        fields = {f.name: f.id for f in c2.list_fields("cmdb-1", "cat-7")}
    for name, kind in (("Cost", "text"), ("PurchaseDate", "text")):  # fields that changed type
        requests.patch(f"{sims.c2_url}/_sim/fields/{fields[name]}", json={"type": kind}, timeout=5).raise_for_status()
    patch_ci(config, printer(1), Cost="1 234,50 $")
    patch_ci(config, printer(2), PurchaseDate="2024-02-30")
    patch_ci(config, printer(3), Manufacturer=BLANK_MAKER)
    patch_ci(config, printer(7), SerialNumber="DUPLICATE-SERIAL")
    patch_ci(config, printer(8), SerialNumber="DUPLICATE-SERIAL")
    with C2Client.from_settings(config.c2) as c2:
        for n, name in ((4, LONG), (5, CONTROL), (6, WORLD)):
            ci = c2.get_ci(printer(n))
            assert ci is not None
            c2.update_ci(ci["id"], ci["version"], name=name, status="active")
    requests.patch(f"{sims.c2_url}/_sim/categories/cat-9", json={"name": "Displays"}, timeout=5).raise_for_status()
    with HectorClient.from_settings(config.hector) as hector:
        location = next(a.id for a in hector.list_attributes() if a.name == "Location")
    requests.delete(f"{sims.hector_url}/_sim/attributes/{location}", timeout=5).raise_for_status()


def test_bad_items_are_skipped_with_reasons_and_the_rest_syncs(config: SyncConfig, sims: RunningSimulators) -> None:
    mess_up(config, sims)
    results = {r.key: r for r in run_sync(config, str(config.source), ["printers", "laptops", "monitors"], full=True)}

    assert results["printers"].success, results["printers"].error
    assert not results["laptops"].success and not results["monitors"].success
    assert "Hector has no attribute 'Location' with scope asset" in (results["laptops"].error or "")
    assert "CMDB 'Production' has no category named 'Monitors' (found: " in (results["monitors"].error or "")
    assert "Displays" in (results["monitors"].error or "")

    skipped = {row[0]: row for row in history(config, "category_key = 'printers' AND outcome = 'skipped'", [])}
    assert skipped[printer(1)][2:5] == ("Cost", None, "1 234,50 $")
    assert skipped[printer(1)][6] == "Cost '1 234,50 $' is not a number"
    assert skipped[printer(2)][6] == "PurchaseDate '2024-02-30' is not a date (YYYY-MM-DD)"
    assert skipped[printer(3)][2] == "Manufacturer"
    assert skipped[printer(3)][6] == "Manufacturer is empty, and Hector needs a maker for the model"

    cis = {ci["id"]: ci for ci in c2_cis(config, "Printers")}
    _, assets, _ = hector_state(config, "Printers")
    by_ci = {refs(a)[0]: a for a in assets if refs(a)}
    valid = {i for i, ci in cis.items() if naive_valid(ci)}
    assert set(by_ci) == valid, "a valid printer was not synced, or an invalid one was"
    assert set(skipped) >= {i for i, ci in cis.items() if ci["status"] == "active"} - valid
    # Values that are odd but valid arrive exactly as C2 ITSM holds them.
    assert by_ci[printer(4)]["title"] == LONG
    assert by_ci[printer(5)]["title"] == CONTROL
    assert by_ci[printer(6)]["title"] == WORLD
    # Without identify_by a serial number is only an attribute: both printers have their asset.
    assert by_ci[printer(7)]["attributes"]["Serial number"] == by_ci[printer(8)]["attributes"]["Serial number"]
    assert by_ci[printer(7)]["id"] != by_ci[printer(8)]["id"]
