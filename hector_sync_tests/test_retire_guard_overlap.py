"""Three holes found by trying to break the sync: a wrong retire the data cannot undo, a guard
that counts items already retired, and two categories that would retire each other's items.

End to end against both simulators over HTTP (a real DuckDB file, Dagster through `run_sync`),
and the configuration through the real console script and `load_config`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from hector_sync.config import CategoryConfig, ConfigError, Direction, load_config
from hector_sync.reconcile import Reconciler
from hector_sync.reconcile.changes import summarize
from hector_sync.runner import run_sync
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import create_schema
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.console import hector_sync
from hector_sync_tests.systems import (
    PHONES, c2_cis, configure, history, linked_assets, patch_asset, reset, seed_phones, set_ci_status, sync, writes,
)


def way(c2: str, direction: str) -> dict[str, str]:
    return {"c2": c2, "direction": direction}


PRINTERS = {  # C2 ITSM → Hector, retiring the asset of a CI that is retired or gone
    "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
    "direction": "c2_to_hector",
    "model": {"maker": "Manufacturer", "model": "Model", "description": "Description"},
    "asset": {"title": "Name", "asset_tag": "AssetTag"},
    "on_missing": "retire",
}
PRINTERS_PER_FIELD = PRINTERS | {  # C2 ITSM owns the model fields, so it creates toward Hector
    "direction": "per_field",
    "model": {k: way(v, "c2_to_hector") for k, v in PRINTERS["model"].items()},
    "asset": {"title": way("Name", "c2_to_hector"), "asset_tag": way("AssetTag", "hector_to_c2")},
}


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """40 CIs per category, and no phones in C2 ITSM (Hector is their source here)."""
    with start_simulators(size=40, sizes={"Phones": 0}) as running:
        yield running



# ----------------------------------------------------------------------------------------------
# 2. A wrong retire is undone by the data
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", [PRINTERS, PRINTERS_PER_FIELD], ids=["c2_to_hector", "per_field"])
def test_an_asset_the_sync_retired_comes_back_when_its_ci_is_active_again(
    write_config: WriteConfig, sims: RunningSimulators, category: dict
) -> None:
    config = configure(write_config, sims, category)
    sync(config, "printers")
    before = linked_assets(config, "Printers")
    wronged, other, personal = sorted(ci for ci, a in before.items() if a["status"] != "retired")[:3]
    # Before the wrong retire, one asset is assigned, another in stock: each gets its own status back.
    patch_asset(config, before[wronged]["id"], status="assigned")
    # A person retires an asset in Hector while its CI stays active: that retire is theirs.
    patch_asset(config, before[personal]["id"], status="retired")

    set_ci_status(config, [wronged, other], "retired")  # the mistake, in C2 ITSM
    sync(config, "printers")
    retired = linked_assets(config, "Printers")
    assert [retired[ci]["status"] for ci in (wronged, other, personal)] == ["retired"] * 3

    set_ci_status(config, [wronged, other], "active")  # and its correction
    results = run_sync(config, str(config.source), ["printers"], full=True)
    assert all(r.success for r in results), [r.error for r in results]
    [result] = [r for r in results if r.direction == "c2_to_hector"]
    after = linked_assets(config, "Printers")
    assert (after[wronged]["status"], after[other]["status"]) == ("assigned", "in_stock"), \
        "the asset the sync retired stayed retired when its CI came back"
    assert after[personal]["status"] == "retired", "an asset a person retired in Hector was reactivated"
    assert {a["id"] for a in after.values()} == {a["id"] for a in before.values()}, "an asset was made twice"
    assert result.counts["updated"] == 2 and result.counts["retired"] == 0, result.counts

    rows = history(config, "action = 'reactivate_asset'", [])
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [
        (wronged, "status", "retired", "assigned", "reactivated"), (other, "status", "retired", "in_stock", "reactivated")]

    if category is PRINTERS:  # (the rule is the same SQL under per_field; one resync is enough time spent)
        reset(sims.c2_url, sims.hector_url)
        sync(config, "printers")
        assert writes(sims.hector_url) == {}, "a sync right after the reactivation wrote to Hector"
        assert linked_assets(config, "Printers")[personal]["status"] == "retired"


def test_only_a_retire_the_sync_made_and_still_stands_is_taken_back(tmp_path: Path) -> None:
    """Five retired assets whose CIs are all active: only the one whose last status change by
    this tool is a sync's retire comes back; the others are a person's or an operator's undo."""
    con = duckdb.connect(str(tmp_path / "hector_sync.duckdb"))
    create_schema(con)
    con.execute("INSERT INTO hector_subcategory (category_key, id, category_id, maker, model, description, attributes,"
                " version) VALUES ('printers', 40, 12, 'HP', 'LaserJet M404', 'Mono laser', MAP {}, 1)")
    con.execute("INSERT INTO plan (plan_id, kind, category_key, direction, planned_at)"
                " VALUES ('undo-1', 'undo', 'printers', 'c2_to_hector', now())")
    for n in range(1, 6):
        con.execute("INSERT INTO c2_ci VALUES ('printers', ?, ?, 'active', now(), 1, MAP {"
                    "'Manufacturer': 'HP', 'Model': 'LaserJet M404', 'Description': 'Mono laser'})", [f"ci-{n}", f"PRN-{n}"])
        con.execute("INSERT INTO hector_asset (category_key, id, category_id, subcategory_id, stockroom_id, title, status,"
                    " attributes, c2_ref, version) VALUES ('printers', ?, 12, 40, 1, ?, 'retired', MAP {}, ?, 3)",
                    [9000 + n, f"PRN-{n}", f"ci-{n}"])

    def recorded(n: int, action: str, old: str, new: str, outcome: str, day: int, plan_id: str = "sync-1") -> None:
        """A row of the history as the writeback keeps it (target_id: the asset id as text)."""
        con.execute("INSERT INTO change_history (run_id, category_key, direction, action, item, target_id, field, old,"
                    " new, outcome, recorded_at, plan_id) VALUES ('r', 'printers', 'c2_to_hector', ?, ?, ?, 'status',"
                    " ?, ?, ?, ?, ?)",
                    [action, f"ci-{n}", str(9000 + n), old, new, outcome, datetime(2026, 11, day, tzinfo=UTC), plan_id])

    recorded(1, "retire_asset", "assigned", "retired", "retired", 1)  # the sync retired it: back, assigned
    recorded(2, "retire_asset", "in_stock", "retired", "retired", 1)  # ... and brought it back; a person retired it since
    recorded(2, "reactivate_asset", "retired", "in_stock", "reactivated", 2)
    recorded(3, "retire_asset", "in_stock", "retired", "retired", 1, plan_id="undo-1")  # an operator's undo retired it
    recorded(4, "retire_asset", "in_stock", "retired", "conflict", 1)  # Hector refused the sync's retire: a person's
    # 9005: retired in Hector by a person, never by the sync
    category = CategoryConfig.model_validate(PRINTERS)
    reconciler = Reconciler.for_category(category, {}, default_stockroom="Main warehouse")
    reconciler.derive(con)
    changes = reconciler.changes(con, Direction.C2_TO_HECTOR, full_read=True)
    assert changes.rows.select("action", "item", "target_id", "field", "old", "new").rows() == [
        ("reactivate_asset", "ci-1", "9001", "status", "retired", "assigned"),
    ]
    assert changes.unchanged == 4  # ci-2 to ci-5
    summary = summarize(changes, linked=5)
    assert (summary.counts["reactivate_asset"], summary.counts["unchanged"], summary.risky) == (1, 4, 0)


# ----------------------------------------------------------------------------------------------
# 3. The guard weighs what it protects: the active linked items
# ----------------------------------------------------------------------------------------------


def test_retired_assets_do_not_widen_the_guard_toward_hector(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims, PRINTERS)
    sync(config, "printers")
    active = sorted(ci for ci, a in linked_assets(config, "Printers").items() if a["status"] != "retired")
    half = len(active) // 2
    set_ci_status(config, active[:half], "retired")
    [wipe] = run_sync(config, str(config.source), ["printers"], full=True, allow_large_change=True)
    assert wipe.success, wipe.error
    linked = linked_assets(config, "Printers")
    remaining = [ci for ci, a in linked.items() if a["status"] != "retired"]
    assert len(remaining) == len(active) - half

    # Few against every linked asset, too many against the active ones.
    count = int(0.2 * len(remaining)) + 1
    assert count / len(linked) <= 0.2 < count / len(remaining)
    set_ci_status(config, sorted(remaining)[:count], "retired")
    [held] = run_sync(config, str(config.source), ["printers"], full=True)
    assert not held.success
    share = f"{count / len(remaining):.0%}"
    assert f"would retire or move {count} of {len(remaining)} linked assets ({share}), more than " \
           "max_change_fraction 20%; nothing was written" in (held.error or ""), held.error
    assert sum(a["status"] != "retired" for a in linked_assets(config, "Printers").values()) == len(remaining)


def test_retired_cis_do_not_widen_the_guard_toward_c2(write_config: WriteConfig, sims: RunningSimulators) -> None:
    config = configure(write_config, sims, PHONES)
    assets = seed_phones(config, 30)
    sync(config, "phones")
    for asset in assets[:15]:
        patch_asset(config, asset["id"], status="retired")
    [wipe] = run_sync(config, str(config.source), ["phones"], full=True, allow_large_change=True)
    assert wipe.success, wipe.error
    assert sum(ci["status"] == "retired" for ci in c2_cis(config, "Phones")) == 15

    # 4 of the 15 active CIs (27%) is too many, though it is 4 of 30 CIs (13%).
    for asset in assets[15:19]:
        patch_asset(config, asset["id"], status="retired")
    [held] = run_sync(config, str(config.source), ["phones"], full=True)
    assert not held.success
    assert "would retire or move 4 of 15 linked CIs (27%), more than max_change_fraction 20%; " \
           "nothing was written" in (held.error or ""), held.error
    assert sum(ci["status"] == "retired" for ci in c2_cis(config, "Phones")) == 15


# ----------------------------------------------------------------------------------------------
# 4. Two categories never share a Hector category or a C2 category
# ----------------------------------------------------------------------------------------------

CI_HOST = "http://127.0.0.1:9"  # never called: the file is refused before any call


def with_categories(*categories: dict) -> dict:
    return {"categories": list(categories), "cmdbs": ["Production", "Lab"]}


EU = PRINTERS | {"key": "printers_eu", "c2_category": "Printers EU", "hector_category": "  printers "}
OVERLAPS = [
    pytest.param(with_categories(PRINTERS, EU), "printers_eu", "hector_category",
                 "categories 'printers' and 'printers_eu' both sync Hector category 'Printers'", id="hector"),
    pytest.param(with_categories(PRINTERS, PHONES, PRINTERS | {"key": "printers_copy", "hector_category": "Laptops",
                                                               "c2_category": " PRINTERS", "direction": "per_field",
                                                               "model": PRINTERS_PER_FIELD["model"],
                                                               "asset": PRINTERS_PER_FIELD["asset"]}),
                 "printers_copy", "c2_category",
                 "categories 'printers' and 'printers_copy' both sync C2 category 'Printers' of CMDB 'Production'",
                 id="c2"),
]
ADVICE = ("two categories would retire each other's items: map each Hector category (and each C2 category) "
          "from one category only, or park one (direction: none)")


def config_file(write_config: WriteConfig, doc: dict) -> Path:
    def edit(data: dict) -> None:
        data.update(yaml.safe_load(yaml.safe_dump(doc)))

    return write_config(CI_HOST, CI_HOST, edit=edit)


@pytest.mark.parametrize(("doc", "key", "field", "fragment"), OVERLAPS)
def test_two_categories_on_one_hector_or_c2_category_are_refused_at_load(
    write_config: WriteConfig, doc: dict, key: str, field: str, fragment: str
) -> None:
    path = config_file(write_config, doc)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text == f"{path}: category '{key}', field '{field}': {fragment}; {ADVICE}", text

    for command in ("validate", "plan"):
        result = hector_sync("--config", str(path), command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.splitlines() == [f"hector-sync: {text}"], (command, result.stderr)
        assert result.stdout == ""


def test_a_parked_category_or_another_cmdb_may_name_the_same_category(write_config: WriteConfig) -> None:
    parked = with_categories(PRINTERS, EU | {"direction": "none"})
    other_cmdb = with_categories(PRINTERS, PRINTERS | {"key": "lab_printers", "cmdb": "Lab", "hector_category": "Laptops"})
    for doc in (parked, other_cmdb):
        assert [c.key for c in load_config(config_file(write_config, doc)).categories] == \
               [c["key"] for c in doc["categories"]]
    # Still refused once the parked one syncs: what counts is the direction, not the order.
    with pytest.raises(ConfigError, match="categories 'printers_eu' and 'printers' both sync Hector category 'printers'"):
        load_config(config_file(write_config, with_categories(EU | {"direction": "c2_to_hector"}, PRINTERS)))
