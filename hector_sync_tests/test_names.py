"""Names match after trimming, everywhere: a CMDB, category, field or attribute that an
administrator named with stray spaces, in C2 ITSM or in Hector, behaves exactly as a clean one.

The configuration keeps the clean names; the simulators' admin endpoints rename things the way
an administrator would, with a space too many. `validate` has always passed on such names; the
sync must then also read the values (C2 ITSM keys a CI's fields by id, Hector an asset's
attributes by its own name) and write them back under the name the system knows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.hector import HectorClient
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import PHONES, refs, reset, seed_phones, sync, writes

HECTOR_SYNC = str(Path(sys.executable).with_name("hector-sync"))
PRINTERS, PHONE_COUNT = 30, 9
PRINTERS_CATEGORY, PHONES_CATEGORY = "cat-7", "cat-10"  # C2 ITSM's ids
HECTOR_PRINTERS, HECTOR_PHONES = 12, 15


def field_ids(config: SyncConfig, category_id: str) -> dict[str, str]:
    with C2Client.from_settings(config.c2) as c2:
        return {f.name: f.id for f in c2.list_fields("cmdb-1", category_id)}


def padded(config: SyncConfig, sims: RunningSimulators) -> dict[str, str]:
    """Give every name the sync uses a stray space at the source; the new names, by role."""
    printer_fields, phone_fields = field_ids(config, PRINTERS_CATEGORY), field_ids(config, PHONES_CATEGORY)
    with HectorClient.from_settings(config.hector) as hector:
        attributes = {a.name: a.id for a in hector.list_attributes()}
    names = {
        "c2 cmdb": " Production ",
        "c2 printers": "Printers  ",
        "c2 phones": " Phones",
        "c2 printer serial": "SerialNumber ",
        "c2 printer model": " Model",
        "c2 phone serial": " SerialNumber",
        "hector printers": " Printers",
        "hector phones": "Phones ",
        "hector serial": " Serial number",
        "hector form factor": "Form factor  ",
    }
    admin = [
        (sims.c2_url, "cmdbs/cmdb-1", "c2 cmdb"),
        (sims.c2_url, f"categories/{PRINTERS_CATEGORY}", "c2 printers"),
        (sims.c2_url, f"categories/{PHONES_CATEGORY}", "c2 phones"),
        (sims.c2_url, f"fields/{printer_fields['SerialNumber']}", "c2 printer serial"),
        (sims.c2_url, f"fields/{printer_fields['Model']}", "c2 printer model"),
        (sims.c2_url, f"fields/{phone_fields['SerialNumber']}", "c2 phone serial"),
        (sims.hector_url, f"categories/{HECTOR_PRINTERS}", "hector printers"),
        (sims.hector_url, f"categories/{HECTOR_PHONES}", "hector phones"),
        (sims.hector_url, f"attributes/{attributes['Serial number']}", "hector serial"),
        (sims.hector_url, f"attributes/{attributes['Form factor']}", "hector form factor"),
    ]
    for url, path, role in admin:
        answer = requests.patch(f"{url}/_sim/{path}", json={"name": names[role]}, timeout=5)
        answer.raise_for_status()
        assert answer.json()["name"] == names[role]
    names["c2 printer serial id"] = printer_fields["SerialNumber"]
    names["c2 printer owner id"] = printer_fields["Owner"]
    names["c2 phone serial id"] = phone_fields["SerialNumber"]
    return names


def cis(config: SyncConfig, category_id: str) -> list[dict]:
    """The category's CIs as C2 ITSM holds them: fields keyed by field id."""
    with C2Client.from_settings(config.c2) as c2:
        return [ci for page in c2.iter_ci_pages("cmdb-1", category_id) for ci in page]


def hector_rows(config: SyncConfig, category_id: int) -> tuple[list[dict], list[dict]]:
    with HectorClient.from_settings(config.hector) as hector:
        models = [s for page in hector.iter_subcategory_pages(category_id) for s in page]
        assets = [a for page in hector.iter_asset_pages(category_id=category_id) for a in page]
    return models, assets


def test_stray_spaces_in_names_on_either_system_sync_like_clean_names(write_config: WriteConfig) -> None:
    with start_simulators(size=40, sizes={"Printers": PRINTERS, "Phones": 0}) as sims:

        def edit(data: dict) -> None:
            printers = next(c for c in data["categories"] if c["key"] == "printers")
            printers["model_attributes"] = {"Form factor": "Model"}  # a subcategory attribute too
            attributes = printers["asset_attributes"]
            attributes[" Owner "] = attributes.pop("Owner")  # and a stray space in the file itself
            data["categories"] = [printers, PHONES]

        config = load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))
        seed_phones(config, PHONE_COUNT)  # their serials then move with the attribute's rename
        names = padded(config, sims)

        validated = subprocess.run([HECTOR_SYNC, "--config", str(config.source), "validate"], capture_output=True,
                                   text=True, timeout=60, env=os.environ.copy())
        assert validated.returncode == 0, validated.stdout + validated.stderr
        assert "OK: the cmdbs and categories printers, phones match C2 ITSM and Hector" in validated.stdout

        reset(sims.c2_url, sims.hector_url)
        sync(config, "printers", "phones")

        # C2 ITSM → Hector: printers, read from "SerialNumber " and " Model", written to
        # " Serial number" and "Form factor  ".
        printers = {ci["id"]: ci["fields"] for ci in cis(config, PRINTERS_CATEGORY) if ci["status"] == "active"}
        serial_of = {ci_id: fields.get(names["c2 printer serial id"]) for ci_id, fields in printers.items()}
        models, assets = hector_rows(config, HECTOR_PRINTERS)
        synced = {refs(a)[0]: a for a in assets if refs(a)}
        assert len(synced) > PRINTERS // 2, f"only {len(synced)} printers synced"
        assert writes(sims.hector_url).get("POST /api/v1/assets") == len(synced)
        for ci_id, asset in synced.items():
            assert serial_of[ci_id], f"{ci_id} has no serial in C2 ITSM"
            assert asset["attributes"].get(names["hector serial"]) == serial_of[ci_id], asset
            assert "Serial number" not in asset["attributes"], f"a second attribute key: {asset['attributes']}"
            owner = (printers[ci_id].get(names["c2 printer owner id"]) or "").strip() or None  # trimmed, as all values
            assert asset["attributes"].get("Owner") == owner, asset
        assert sum("Owner" in a["attributes"] for a in synced.values()) > len(synced) // 2
        assert len(models) > 1
        for model in models:
            assert set(model["attributes"]) <= {names["hector form factor"]}, model
            assert model["attributes"].get(names["hector form factor"]) == model["model"], model

        # Hector → C2 ITSM: phones, read from " Serial number" and written to " SerialNumber".
        _, phones = hector_rows(config, HECTOR_PHONES)
        created = {ci["id"]: ci for ci in cis(config, PHONES_CATEGORY)}
        assert writes(sims.c2_url).get("POST /api/v1/cmdbs/{cmdb_id}/cis") == PHONE_COUNT
        assert sorted(refs(a)[0] for a in phones) == sorted(created)
        for asset in phones:
            ci = created[refs(asset)[0]]
            serial = asset["attributes"][names["hector serial"]]
            assert serial.startswith("SN"), asset
            assert ci["fields"].get(names["c2 phone serial id"]) == serial, ci
        known = set(field_ids(config, PHONES_CATEGORY).values())
        assert all(set(ci["fields"]) <= known for ci in created.values()), "a field C2 ITSM does not have"

        # Nothing read as empty, so nothing to write again: no flip-flop on either side.
        reset(sims.c2_url, sims.hector_url)
        sync(config, "printers", "phones")
        assert writes(sims.hector_url) == {}, "the second sync wrote to Hector again"
        assert writes(sims.c2_url) == {}, "the second sync wrote to C2 ITSM again"
