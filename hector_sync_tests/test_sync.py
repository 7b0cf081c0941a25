"""C2 ITSM → Hector end to end, through Dagster, against both simulators over HTTP.

Expectations come from an independent per-record reading of the C2 data (the naive rules in
plain Python), compared with what Hector holds afterwards, read through its API.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hector_sync.cli import main
from hector_sync.config import SyncConfig, load_config
from hector_sync.demo import DEMO_CONFIG_PATH, DEMO_ENV
from hector_sync.simulators.sample_data import AMBIGUOUS_LAPTOP, MESSY, UNLINKED_LAPTOPS, ci_id
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.systems import (
    c2_cis, hector_state, history, naive_valid, patch_ci, refs, reset, sync, triple, writes,
)

SIZE = 60  # past every messy index and the identify_by fixtures, two C2 pages


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=SIZE) as running:
        yield running


@pytest.fixture
def config(sims: RunningSimulators, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyncConfig:
    for name, value in DEMO_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    text = (
        DEMO_CONFIG_PATH.read_text()
        .replace("http://127.0.0.1:8701", sims.c2_url)
        .replace("http://127.0.0.1:8702", sims.hector_url)
    )
    path = tmp_path / "hector_sync.yaml"
    path.write_text(text)
    return load_config(path)


def test_first_sync_makes_one_model_per_triple_and_one_asset_per_valid_ci(config: SyncConfig) -> None:
    sync(config, "printers")
    cis = c2_cis(config, "Printers")
    valid = [ci for ci in cis if naive_valid(ci)]
    models, assets, stockroom = hector_state(config, "Printers")

    model_triples = Counter(triple(m["maker"], m["model"], m["description"]) for m in models.values())
    wanted = {triple(*(ci["fields"][k] for k in ("Manufacturer", "Model", "Description"))) for ci in valid}
    assert wanted and all(model_triples[t] == 1 for t in wanted)

    by_ref = {ref: a for a in assets for ref in refs(a)}
    assert sorted(by_ref) == sorted(ci["id"] for ci in valid)
    assert len(assets) == len(valid)
    for ci in valid:
        asset, f = by_ref[ci["id"]], ci["fields"]
        model = models[asset["subcategory_id"]]
        assert triple(model["maker"], model["model"], model["description"]) == triple(
            f["Manufacturer"], f["Model"], f["Description"])
        assert asset["stockroom_id"] == stockroom
        assert (asset["title"], asset["asset_tag"], asset["acquisition_date"]) == (
            ci["name"], f.get("AssetTag"), f.get("PurchaseDate"))
        assert asset["attributes"]["Serial number"] == f["SerialNumber"]

    padded = by_ref[ci_id("Printers", MESSY["padded_maker"])]
    assert models[padded["subcategory_id"]]["maker"].strip() == "HP"
    skipped = {row[0]: row for row in history(config, "outcome = 'skipped'", [])}
    assert skipped[ci_id("Printers", MESSY["blank_maker"])][2:5] == ("Manufacturer", None, "")
    assert skipped[ci_id("Printers", MESSY["blank_maker"])][6] == (
        "Manufacturer is empty, and Hector needs a maker for the model")
    assert skipped[ci_id("Printers", MESSY["whitespace_model"])][6].startswith("Model is empty")
    assert skipped[ci_id("Printers", MESSY["no_description"])][6].startswith("Description is empty")
    assert ci_id("Printers", MESSY["retired"]) not in by_ref


def test_identify_by_links_existing_assets_and_reports_ambiguity(config: SyncConfig) -> None:
    before = {a["id"]: a for a in hector_state(config, "Laptops")[1]}
    sync(config, "laptops")
    _, assets, _ = hector_state(config, "Laptops")
    by_ref = Counter(ref for a in assets for ref in refs(a))
    assert set(by_ref.values()) == {1}, "no CI has two assets"
    linked = {ci_id("Laptops", i): next(a["id"] for a in assets if ci_id("Laptops", i) in refs(a)) for i in UNLINKED_LAPTOPS}
    assert set(linked.values()) <= set(before), "the pre-existing assets were linked, not duplicated"
    ambiguous = ci_id("Laptops", AMBIGUOUS_LAPTOP)
    assert ambiguous not in by_ref
    [row] = history(config, "item = ? AND outcome = 'skipped'", [ambiguous])
    assert "matches several unlinked assets" in row[6]


def test_second_sync_writes_nothing(config: SyncConfig, sims: RunningSimulators) -> None:
    sync(config, "printers", "laptops")
    reset(sims.c2_url, sims.hector_url)
    sync(config, "printers", "laptops")
    for url in (sims.c2_url, sims.hector_url):
        assert writes(url) == {}, url


def test_changed_cis_are_written_exactly_and_recorded(config: SyncConfig, sims: RunningSimulators) -> None:
    sync(config, "printers", "laptops")
    tagged, remodelled, other = ci_id("Printers", 30), ci_id("Printers", 31), ci_id("Laptops", 30)
    patch_ci(config, tagged, AssetTag="A-NEW-30")
    patch_ci(config, remodelled, Model="LaserJet Pro 4001")
    patch_ci(config, other, AssetTag="L-NEW-30")
    reset(sims.hector_url)

    sync(config, "printers", full=False)  # one partition, incremental read

    # Two asset PATCHes and the new model; the edited CI 30 is now its model's most recent
    # CI, so the model's price follows its Cost (the rules' "most recent CI wins").
    assert writes(sims.hector_url) == {
        "PATCH /api/v1/assets/{row_id}": 2, "POST /api/v1/subcategories": 1,
        "PATCH /api/v1/subcategories/{row_id}": 1,
    }
    models, assets, _ = hector_state(config, "Printers")
    by_ref = {ref: a for a in assets for ref in refs(a)}
    assert by_ref[tagged]["asset_tag"] == "A-NEW-30"
    assert models[by_ref[remodelled]["subcategory_id"]]["model"] == "LaserJet Pro 4001"
    _, laptops, _ = hector_state(config, "Laptops")
    assert all(a["asset_tag"] != "L-NEW-30" for a in laptops), "the laptops partition was not touched"

    new_model = models[by_ref[remodelled]["subcategory_id"]]
    changes = history(config, "item IN (?, ?) AND action IN ('update_asset', 'move_asset')", [tagged, remodelled])
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in changes] == [
        (tagged, "update_asset", "asset_tag", "A-NEW-30", "updated"),
        (remodelled, "move_asset", "subcategory", " / ".join(new_model[k] for k in ("maker", "model", "description")), "moved"),
    ]
    assert changes[0][3] not in (None, "A-NEW-30"), "the old value is kept"


def test_plan_prints_the_change_set_and_writes_to_neither_system(
    config: SyncConfig, sims: RunningSimulators, capsys: pytest.CaptureFixture[str]
) -> None:
    reset(sims.c2_url, sims.hector_url)
    with pytest.raises(SystemExit) as exit_status:
        main(["--config", str(config.source), "plan", "--category", "printers", "--full"])
    assert exit_status.value.code == 0
    out = capsys.readouterr().out
    assert "printers (c2_to_hector):" in out and "create_asset" in out
    for url in (sims.c2_url, sims.hector_url):
        assert writes(url) == {}, url
