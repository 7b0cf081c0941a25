"""The category's names are resolved once, by the `category_catalog` asset, and every later step
works from the resolution its snapshots read with, whatever an operator rematerializes.

Real `dagster asset materialize` commands on this project's code location, real simulators.
"""

from __future__ import annotations

import yaml

from hector_sync.config import SyncConfig
from hector_sync.simulators.serve import RunningSimulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import sync
from hector_sync_tests.test_plans import configure, latest_metadata, materialize, ok, sims  # noqa: F401 (fixture)


def read_with(config: SyncConfig) -> set[str]:
    """The resolutions the category's two snapshots read with."""
    rows = Store(config.storage.duckdb_path).query(
        "SELECT catalog_id FROM snapshot_state WHERE category_key = 'printers'").rows()
    return {r[0] for r in rows}


def test_a_step_rerun_alone_uses_the_resolution_its_snapshots_read_with(
    write_config: WriteConfig, sims: RunningSimulators,  # noqa: F811
) -> None:
    config = configure(write_config, sims)
    sync(config, "printers")
    [first] = read_with(config)

    ok(materialize(config, "category_catalog", "printers"))  # resolved again, nothing read since
    second = latest_metadata("category_catalog", "printers")["catalog_id"]
    assert second != first

    ok(materialize(config, "hector_change_set", "printers"))
    assert latest_metadata("hector_change_set", "printers")["catalog_id"] == first

    ok(materialize(config, "c2_cmdb_snapshot,hector_inventory_snapshot,desired_hector_models,hector_change_set",
                   "printers"))
    assert read_with(config) == {second}
    assert latest_metadata("hector_change_set", "printers")["catalog_id"] == second


def test_a_mapping_changed_in_the_file_is_never_worked_on_with_an_old_resolution(
    write_config: WriteConfig, sims: RunningSimulators,  # noqa: F811
) -> None:
    config = configure(write_config, sims)
    sync(config, "printers")
    data = yaml.safe_load(config.source.read_text(encoding="utf-8"))
    del data["categories"][0]["asset_attributes"]["Location"]  # stop syncing a field
    config.source.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    refused = materialize(config, "hector_change_set", "printers")

    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "its mapping in the configuration changed since run" in said, said[-3000:]
    assert "materialize category_catalog and both snapshots again" in said
    ok(materialize(config, "category_catalog,c2_cmdb_snapshot,hector_inventory_snapshot,desired_hector_models,"
                   "hector_change_set", "printers"))


def test_a_snapshot_before_any_resolution_says_what_to_materialize_first(
    write_config: WriteConfig, sims: RunningSimulators,  # noqa: F811
) -> None:
    config = configure(write_config, sims)

    refused = materialize(config, "c2_cmdb_snapshot", "printers")

    assert refused.returncode != 0
    assert "its names were never resolved: materialize category_catalog" in refused.stdout + refused.stderr
    ok(materialize(config, "category_catalog,c2_cmdb_snapshot", "printers"))
    assert len(read_with(config)) == 1
