"""`hector-sync undo RUN_ID`: the inverse of what one run applied, shown, then applied with
--yes, against both simulators over HTTP. What the run created is retired (never deleted),
updates and moves go back, retired items come back, and an item someone changed after the run
is left as that person left it and reported as a conflict.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.definitions import build_definitions
from hector_sync.runner import run_sync
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.console import hector_sync
from hector_sync_tests.systems import (
    PHONES, c2_cis, hector_state, patch_asset, patch_ci, printers_retiring, refs, reset, seed_phones, writes,
)


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=40) as running:
        yield running


@pytest.fixture
def config(write_config: WriteConfig, sims: RunningSimulators) -> SyncConfig:
    return load_config(write_config(sims.c2_url, sims.hector_url, edit=printers_retiring))


def synced(config: SyncConfig) -> str:
    """Sync printers; the run's id."""
    [result] = run_sync(config, str(config.source), ["printers"], full=True)
    assert result.success and not result.error, result.error
    return result.run_id


def printers(config: SyncConfig) -> dict[str, dict]:
    """Each printer asset as an operator compares it, by the CI it stands for."""
    models, assets, _ = hector_state(config, "Printers")
    return {
        refs(a)[0]: {"title": a["title"], "serial": a["attributes"].get("Serial number"), "status": a["status"],
                     "model": tuple(models[a["subcategory_id"]][k] for k in ("maker", "model", "description")),
                     "id": a["id"]}
        for a in assets
    }


def create_printer(config: SyncConfig) -> str:
    """A printer entered in C2 ITSM by hand: the run to undo creates its asset."""
    with C2Client.from_settings(config.c2) as c2:
        category = next(c for c in c2.list_categories("cmdb-1") if c.name == "Printers")
        ids = {f.name: f.id for f in c2.list_fields("cmdb-1", category.id)}
        fields = {"Manufacturer": "Xerox", "Model": "VersaLink C400", "Description": "Colour laser printer",
                  "SerialNumber": "XRX-UNDO-1", "AssetTag": "PRN-UNDO-1"}
        return str(c2.create_ci("cmdb-1", category.id, "PRN-UNDO-1", {ids[k]: v for k, v in fields.items()})["id"])


def retire_ci(config: SyncConfig, ci_id: str) -> None:
    with C2Client.from_settings(config.c2) as c2:
        current = c2.get_ci(ci_id)
        assert current is not None
        c2.update_ci(ci_id, current["version"], status="retired")


def test_undo_takes_back_a_run_and_leaves_what_someone_changed_since(config: SyncConfig, sims: RunningSimulators) -> None:
    synced(config)
    before = printers(config)
    active = [ci["id"] for ci in c2_cis(config, "Printers") if ci["status"] == "active" and ci["id"] in before]
    updated, moved, retired, edited_later = active[:4]
    old_model = before[moved]["model"]

    # What the run to undo will do: update one, move one, retire one, create one, update one more.
    patch_ci(config, updated, SerialNumber="SN-CHANGED-1")
    patch_ci(config, moved, Manufacturer="Brother", Model="HL-L2350DW", Description="Mono laser printer")
    retire_ci(config, retired)
    created = create_printer(config)
    patch_ci(config, edited_later, SerialNumber="SN-CHANGED-2")
    run = synced(config)
    after_run = printers(config)
    assert after_run[updated]["serial"] == "SN-CHANGED-1"
    assert after_run[moved]["model"] == ("Brother", "HL-L2350DW", "Mono laser printer")
    assert after_run[retired]["status"] == "retired"
    assert after_run[created]["status"] != "retired"

    # Someone fixes one of those assets by hand in Hector after the run.
    patch_asset(config, after_run[edited_later]["id"], attributes={"Serial number": "SN-BY-HAND"})

    # Without --yes: the inverse plan is shown and nothing is written anywhere.
    reset(sims.c2_url, sims.hector_url)
    shown = hector_sync("--config", str(config.source), "undo", run)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert {"c2": writes(sims.c2_url), "hector": writes(sims.hector_url)} == {"c2": {}, "hector": {}}
    out = shown.stdout
    assert f"the undo of run {run}" in out and "--yes" in out, out
    for action in ("retire_asset", "reactivate_asset", "move_asset", "update_asset", "conflict"):
        assert action in out, f"{action} is not in the undo plan:\n{out}"
    assert printers(config) == after_run | {edited_later: {**after_run[edited_later], "serial": "SN-BY-HAND"}}

    applied = hector_sync("--config", str(config.source), "undo", run, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    now = printers(config)
    assert now[updated]["serial"] == before[updated]["serial"]
    assert now[moved]["model"] == old_model and now[moved]["id"] == before[moved]["id"]
    assert now[retired]["status"] == before[retired]["status"] != "retired"
    assert now[created]["status"] == "retired", "the asset the run created is retired, not deleted"
    assert now[edited_later]["serial"] == "SN-BY-HAND", "undo overwrote what a person changed after the run"
    untouched = set(before) - {edited_later}
    assert {k: now[k] for k in untouched} == {k: before[k] for k in untouched}, "undo did not restore the state before the run"

    # The history records the undo as the undo of that run, and the conflict with its reason.
    store = Store(config.storage.duckdb_path)
    undo_plans = store.query("SELECT plan_id, undo_of, finished_by FROM plan WHERE kind = 'undo' ORDER BY planned_at").rows()
    assert [u for _, u, _ in undo_plans] == [run, run], "the shown plan and the applied one, both undoing that run"
    assert undo_plans[0][2] is None and undo_plans[1][2] is not None, "only the plan of --yes was applied"
    rows = store.query(
        "SELECT item, action, outcome, message FROM change_history WHERE plan_id = ? ORDER BY item, action",
        [undo_plans[1][0]]).rows()
    conflict = [r for r in rows if r[0] == edited_later]
    assert conflict and conflict[0][1:3] == ("conflict", "conflict"), rows
    assert f"undo of run {run}" in conflict[0][3] and "SN-BY-HAND" in conflict[0][3], conflict
    assert {(r[0], r[1], r[2]) for r in rows if r[0] == created} == {(created, "retire_asset", "retired")}

    # `history` tells the retired printer's whole life: created, retired by the run, reactivated by its undo.
    life = hector_sync("--config", str(config.source), "history", retired)
    assert life.returncode == 0, life.stderr
    changes = [line.split() for line in life.stdout.splitlines()[2:]]
    assert [c[5] for c in changes if c[5] != "create_asset"] == ["retire_asset", "reactivate_asset"], life.stdout
    assert {c[2] for c in changes if c[5] == "retire_asset"} == {run}
    assert f"undo of run {run}" in life.stdout.splitlines()[-1], life.stdout


def test_undo_of_an_unknown_run_says_so_and_writes_nothing(config: SyncConfig, sims: RunningSimulators) -> None:
    synced(config)
    reset(sims.c2_url, sims.hector_url)
    result = hector_sync("--config", str(config.source), "undo", "no-such-run", "--yes")
    assert result.returncode == 1
    assert "run no-such-run applied nothing" in result.stderr and "nothing to undo" in result.stderr, result.stderr
    assert {"c2": writes(sims.c2_url), "hector": writes(sims.hector_url)} == {"c2": {}, "hector": {}}


def test_undoing_a_first_sync_toward_c2_retires_its_cis_once_the_guard_is_let_through(
    write_config: WriteConfig,
) -> None:
    with start_simulators(size=40, sizes={"Phones": 0}) as sims:
        def edit(data: dict) -> None:
            data["categories"] = [PHONES]

        config = load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))
        seed_phones(config, 12)
        [result] = run_sync(config, str(config.source), ["phones"], full=True)
        assert result.success and result.counts["created"] == 12, result
        assert len([ci for ci in c2_cis(config, "Phones") if ci["status"] == "active"]) == 12

        reset(sims.c2_url, sims.hector_url)
        held = hector_sync("--config", str(config.source), "undo", result.run_id, "--yes")
        assert held.returncode == 1, held.stdout
        assert "retire or move 12 of 12 linked CIs" in held.stdout and "--allow-large-change" in held.stdout, held.stdout
        assert writes(sims.c2_url) == {}, "the guard let a wipe of C2 ITSM through"

        done = hector_sync("--config", str(config.source), "undo", result.run_id, "--yes", "--allow-large-change")
        assert done.returncode == 0, done.stdout + done.stderr
        cis = c2_cis(config, "Phones")
        assert len(cis) == 12 and {ci["status"] for ci in cis} == {"retired"}, "created CIs are retired, never deleted"


def test_the_undo_job_of_the_ui_shows_then_applies_the_undo_of_one_category(
    config: SyncConfig, sims: RunningSimulators
) -> None:
    synced(config)
    before = printers(config)
    ci = next(iter(sorted(before)))
    patch_ci(config, ci, SerialNumber="SN-UNDO-JOB")
    run = synced(config)
    assert printers(config)[ci]["serial"] == "SN-UNDO-JOB"

    job = build_definitions(str(config.source)).resolve_job_def("undo_run")
    with dg.DagsterInstance.get() as instance:
        def launch(apply: bool) -> dict:
            result = job.execute_in_process(
                partition_key="printers", instance=instance, raise_on_error=False,
                run_config={"ops": {"undo_category": {"config": {"run_id": run, "apply": apply}}}})
            assert result.success, result.all_events
            [observed] = [e.event_specific_data.asset_observation for e in result.all_events
                          if e.event_type_value == "ASSET_OBSERVATION"]
            assert observed.asset_key == dg.AssetKey("hector_writeback") and observed.partition == "printers"
            return {k: v.value for k, v in observed.metadata.items()}

        reset(sims.c2_url, sims.hector_url)
        shown = launch(apply=False)
        assert shown["plan_id"].startswith("printers.hector.") and shown["plan_kind"] == f"undo of run {run}"
        preview = " | ".join(str(v) for r in shown["undo_preview"].records for v in r.data.values())
        assert "SN-UNDO-JOB" in preview and "launch again with apply: true" in shown["wrote_nothing"]
        assert writes(sims.hector_url) == {} and printers(config)[ci]["serial"] == "SN-UNDO-JOB"

        applied = launch(apply=True)
        assert applied["rows_updated"] == 1, applied
    assert printers(config)[ci]["serial"] == before[ci]["serial"]
