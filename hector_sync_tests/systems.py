"""What the two systems hold, read over their APIs as an operator's script would, and a sync
run as `hector-sync sync` runs it: the shared vocabulary of the end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from datetime import date

import requests

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.hector import HectorClient
from hector_sync.runner import run_sync
from hector_sync.simulators.serve import RunningSimulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig

PHONES = {  # assets of Hector become CIs of C2 ITSM
    "key": "phones", "cmdb": "Production", "c2_category": "Phones", "hector_category": "Phones",
    "direction": "hector_to_c2",
    "model": {"maker": "Manufacturer", "model": "Model", "description": "Description"},
    "asset": {"title": "Name", "asset_tag": "AssetTag", "acquisition_date": "PurchaseDate"},
    "asset_attributes": {"Serial number": "SerialNumber"},
    "on_missing": "retire",
}
PHONE_MODELS = [("Apple", "iPhone 15", "Smartphone 6.1-inch"), ("Samsung", "Galaxy S24", "Smartphone 6.2-inch"),
                ("Cisco", "CP-8845", "IP desk phone")]


def way(c2: str, direction: str) -> dict[str, str]:
    return {"c2": c2, "direction": direction}


PRINTERS_PER_FIELD = {  # maker/model/title/serial from C2 ITSM; asset tag and purchase date from Hector
    "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
    "direction": "per_field",
    "model": {"maker": way("Manufacturer", "c2_to_hector"), "model": way("Model", "c2_to_hector"),
              "description": way("Description", "c2_to_hector")},
    "asset": {"title": way("Name", "c2_to_hector"), "asset_tag": way("AssetTag", "hector_to_c2"),
              "acquisition_date": way("PurchaseDate", "hector_to_c2")},
    "asset_attributes": {"Serial number": way("SerialNumber", "c2_to_hector")},
    "identify_by": {"c2": "SerialNumber", "hector": "Serial number"},
    "on_missing": "ignore",
}


def configure(write_config: WriteConfig, sims: RunningSimulators, *categories: dict) -> SyncConfig:
    """The demo configuration pointed at `sims`, with exactly these categories."""
    def edit(data: dict) -> None:
        data["categories"] = list(categories)

    return load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))


def printers_retiring(data: dict) -> None:
    """A `write_config` edit: the demo's printers alone, retiring assets whose CI is gone."""
    data["categories"] = [c | {"on_missing": "retire"} for c in data["categories"] if c["key"] == "printers"]


def kill_when(proc: subprocess.Popen, reached: Callable[[], bool], timeout: float = 120) -> None:
    """SIGKILL the running sync `proc` as soon as `reached()`, which must happen while it runs."""
    deadline = time.monotonic() + timeout
    try:
        while not reached():
            assert proc.poll() is None, "the sync ended before it could be killed"
            assert time.monotonic() < deadline, "the sync never got to the point of the kill"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def ten_minutes_pass(config: SyncConfig) -> None:
    """Age the create journal and the history by 11 minutes in DuckDB: what a held C2 create
    needs before a read that still lists no such CI may settle it as never landed."""
    with Store(config.storage.duckdb_path).connect() as con:
        for table in ("pending_create", "change_history"):
            con.execute(f"UPDATE {table} SET recorded_at = recorded_at - INTERVAL 11 MINUTE")


def sync(config: SyncConfig, *keys: str, full: bool = True) -> None:
    """Sync the categories and insist every one succeeded (a per_field one reports two rows)."""
    results = run_sync(config, str(config.source), list(keys), full=full)
    failed = [(r.key, r.direction, r.error) for r in results if not r.success or r.error]
    assert not failed, f"sync failed: {failed}"
    assert sorted({r.key for r in results}) == sorted(keys)


def c2_cis(config: SyncConfig, category: str) -> list[dict]:
    with C2Client.from_settings(config.c2) as c2:
        cat = next(c for c in c2.list_categories("cmdb-1") if c.name == category)
        names = {f.id: f.name for f in c2.list_fields("cmdb-1", cat.id)}
        return [
            {**ci, "fields": {names[k]: v for k, v in ci["fields"].items() if k in names}}
            for page in c2.iter_ci_pages("cmdb-1", cat.id) for ci in page
        ]


def hector_state(config: SyncConfig, category: str) -> tuple[dict[int, dict], list[dict], int]:
    """Subcategories by id, assets, and the default stockroom's id."""
    with HectorClient.from_settings(config.hector) as hector:
        cat = next(c for c in hector.list_categories() if c.name == category)
        models = {s["id"]: s for page in hector.iter_subcategory_pages(cat.id) for s in page}
        assets = [a for page in hector.iter_asset_pages(category_id=cat.id) for a in page]
        stockroom = next(s.id for s in hector.list_stockrooms() if s.name == config.default_stockroom)
    return models, assets, stockroom


def refs(asset: dict) -> list[str]:
    return [r["id"] for r in asset["external_refs"] if r["source"] == "c2"]


def stats(url: str) -> dict[str, int]:
    return requests.get(f"{url}/_sim/stats", timeout=5).json()["by_method"]


def writes(url: str) -> dict[str, int]:
    """Calls that change data: POST and PATCH, logging in aside."""
    routes = requests.get(f"{url}/_sim/stats", timeout=5).json()["by_route"]
    return {r: n for r, n in routes.items() if r.split()[0] in ("POST", "PATCH") and not r.endswith("/auth/login")}


def reset(*urls: str) -> None:
    for url in urls:
        requests.post(f"{url}/_sim/stats/reset", timeout=5).raise_for_status()


def history(config: SyncConfig, where: str, params: list) -> list[tuple]:
    frame = Store(config.storage.duckdb_path).query(
        f"SELECT item, action, field, old, new, outcome, message FROM change_history WHERE {where} ORDER BY item, field",
        params,
    )
    return frame.rows()


def patch_asset(config: SyncConfig, asset_id: int, **changes: object) -> None:
    """Edit an asset as a person in Hector's UI would (not through the sync)."""
    with HectorClient.from_settings(config.hector) as hector:
        current = next(a for page in hector.iter_asset_pages() for a in page if a["id"] == asset_id)
        hector.update_asset(asset_id, current["version"], changes)


def patch_ci(config: SyncConfig, ci_id: str, **fields: object) -> None:
    """Edit a CI's fields, by name, as a person in C2 ITSM would."""
    with C2Client.from_settings(config.c2) as c2:
        current = c2.get_ci(ci_id)
        assert current is not None
        ids = {f.name: f.id for f in c2.list_fields(current["cmdb_id"], current["category_id"])}
        c2.update_ci(ci_id, current["version"], fields={ids[k]: v for k, v in fields.items()})


def seed_phones(config: SyncConfig, count: int) -> list[dict]:
    """`count` phone assets in Hector, entered by hand before any sync (no external ref)."""
    with HectorClient.from_settings(config.hector) as hector:
        models = [hector.create_subcategory({"category_id": 15, "maker": mk, "model": md, "description": ds})["id"]
                  for mk, md, ds in PHONE_MODELS]
        return [
            hector.create_asset({
                "subcategory_id": models[i % len(models)], "stockroom_id": 1, "title": f"PHN-{i:05d}",
                "asset_tag": f"T-{i:05d}", "acquisition_date": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "attributes": {"Serial number": f"SN{i:07d}"}})
            for i in range(count)
        ]


def triple(maker: str, model: str, description: str) -> tuple[str, str, str]:
    return (maker.strip().lower(), model.strip().lower(), description.strip().lower())


def naive_valid(ci: dict) -> bool:
    """The rules read per record: active, a full model triple, numbers and dates that parse."""
    f = ci["fields"]
    if ci["status"] != "active" or not all((f.get(k) or "").strip() for k in ("Manufacturer", "Model", "Description")):
        return False
    try:
        for key in ("PurchaseDate", "WarrantyEnd"):
            if f.get(key):
                date.fromisoformat(f[key])
        if f.get("Cost") is not None:
            float(f["Cost"])
    except ValueError:
        return False
    return True


def set_ci_status(config: SyncConfig, ci_ids: list[str], status: str) -> None:
    """Retire or reactivate CIs as a person in C2 ITSM would."""
    with C2Client.from_settings(config.c2) as c2:
        for ci_id in ci_ids:
            current = c2.get_ci(ci_id)
            assert current is not None
            c2.update_ci(ci_id, current["version"], status=status)  # type: ignore[arg-type]


def linked_assets(config: SyncConfig, category: str) -> dict[str, dict]:
    """Hector's assets of the category that hold a c2 ref, by that ref."""
    return {refs(a)[0]: a for a in hector_state(config, category)[1] if refs(a)}
