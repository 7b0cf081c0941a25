"""Every path that reruns a writeback is safe: a plan is applied at most once, row by row.

Rematerializing a writeback alone, running the whole chain, `hector-sync apply` of a stale plan,
a plan whose items were edited since, and a writeback killed halfway then re-executed from
failure: each counted at the simulators (POST/PATCH by route) and read back through their APIs.
Real simulators over HTTP, a real DuckDB file, real Dagster commands and instance; no mocks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from hector_sync.config import CONFIG_ENV_VAR, SyncConfig, load_config
from hector_sync.definitions import build_definitions
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.console import hector_sync
from hector_sync_tests.systems import (
    PHONES, c2_cis, hector_state, kill_when, patch_asset, patch_ci, refs, reset, seed_phones, sync, writes,
)

DAGSTER = str(Path(sys.executable).with_name("dagster"))
HECTOR_SYNC = str(Path(sys.executable).with_name("hector-sync"))
CHAIN = "c2_cmdb_snapshot,hector_inventory_snapshot,desired_hector_models,hector_change_set,hector_writeback"
ASSET_PATCH = "PATCH /api/v1/assets/{row_id}"
ASSET_POST = "POST /api/v1/assets"
SUBCATEGORY_POST = "POST /api/v1/subcategories"


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """40 printers in C2 ITSM; no phones there (Hector is their source)."""
    with start_simulators(size=40, sizes={"Phones": 0}) as running:
        yield running


def printers_only(data: dict) -> None:
    data["categories"] = [c for c in data["categories"] if c["key"] == "printers"]


def configure(write_config: WriteConfig, sims: RunningSimulators, *, phones: bool = False, **top: object) -> SyncConfig:
    def edit(data: dict) -> None:
        printers_only(data)
        if phones:
            data["categories"].append(PHONES)
        data.update(top)

    return load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))


def both_writes(sims: RunningSimulators) -> dict[str, dict[str, int]]:
    return {"c2": writes(sims.c2_url), "hector": writes(sims.hector_url)}


def dagster(config: SyncConfig, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Dagster's own command line on this project's code location, configured by the file."""
    return subprocess.run([DAGSTER, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=os.environ | {CONFIG_ENV_VAR: str(config.source)})


def materialize(config: SyncConfig, select: str, partition: str) -> subprocess.CompletedProcess[str]:
    return dagster(config, "asset", "materialize", "-m", "hector_sync.definitions", "--select", select,
                   "--partition", partition)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def sim_stats(url: str) -> dict:
    return requests.get(f"{url}/_sim/stats", timeout=5).json()


def cli(config: SyncConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return hector_sync("--config", str(config.source), *args)


def plan_ids(stdout: str) -> list[str]:
    """The ids `hector-sync plan` printed, one `  plan <id> (from ...)` line per direction."""
    return re.findall(r"^  plan (\S+?),? .*\(from ", stdout, flags=re.MULTILINE)


def latest_metadata(asset: str, partition: str) -> dict[str, object]:
    with dg.DagsterInstance.get() as instance:
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1).records
        materialization = record.asset_materialization
        assert materialization is not None
        return {k: v.value for k, v in materialization.metadata.items()}


def linked_printers(config: SyncConfig, count: int) -> list[tuple[str, dict]]:
    """`count` (CI id, asset) pairs the first sync linked, in a stable order."""
    _, assets, _ = hector_state(config, "Printers")
    pairs = sorted((refs(a)[0], a) for a in assets if refs(a) and a["status"] != "retired")
    assert len(pairs) >= count
    return pairs[:count]


@pytest.fixture
def synced(write_config: WriteConfig, sims: RunningSimulators) -> SyncConfig:
    """The printers, synced once."""
    config = configure(write_config, sims)
    sync(config, "printers")
    return config


def edit_one_printer(config: SyncConfig, serial: str) -> dict:
    """The first linked printer's serial number set to `serial` in C2 ITSM; its asset as it was."""
    [(ci_id, before)] = linked_printers(config, 1)
    patch_ci(config, ci_id, SerialNumber=serial)
    return before


def asset(config: SyncConfig, asset_id: int) -> dict:
    _, assets, _ = hector_state(config, "Printers")
    return next(a for a in assets if a["id"] == asset_id)


# --- 1. rematerializing a writeback alone -------------------------------------------------------------


def test_a_writeback_rematerialized_after_its_sync_writes_nothing(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims, phones=True)
    seed_phones(config, 12)
    sync(config, "phones", "printers")
    assert len(c2_cis(config, "Phones")) == 12
    reset(sims.c2_url, sims.hector_url)

    ok(materialize(config, "c2_writeback", "phones"))
    ok(materialize(config, "hector_writeback", "printers"))

    assert both_writes(sims) == {"c2": {}, "hector": {}}, "a rematerialized writeback sent its plan again"
    phones = c2_cis(config, "Phones")
    assert len(phones) == 12 and len({ci["name"] for ci in phones}) == 12, "C2 ITSM holds a phone twice"
    for asset_name, partition in (("c2_writeback", "phones"), ("hector_writeback", "printers")):
        said = latest_metadata(asset_name, partition)
        assert "was applied by run" in str(said.get("wrote_nothing")), said
        assert str(said["wrote_nothing"]).startswith(f"plan {said['plan_id']} was applied by run "), said

    # The change set alone re-plans from snapshots read before that sync wrote: its writeback refuses the plan.
    ok(materialize(config, "hector_change_set", "printers"))
    refused = materialize(config, "hector_writeback", "printers")
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said[-3000:]
    assert "is superseded: run " in said and "wrote to category 'printers'" in said, said[-3000:]
    assert both_writes(sims) == {"c2": {}, "hector": {}}, "a plan from snapshots older than the last writeback was sent"


# --- 2. the whole chain through Dagster's command line -------------------------------------------------


def test_the_whole_chain_materialized_reads_afresh_and_writes_the_one_edit(
    synced: SyncConfig, sims: RunningSimulators
) -> None:
    config = synced
    before = edit_one_printer(config, "SN-EDITED-IN-C2")
    reset(sims.c2_url, sims.hector_url)

    ok(materialize(config, CHAIN, "printers"))

    assert both_writes(sims) == {"c2": {}, "hector": {ASSET_PATCH: 1}}
    after = asset(config, before["id"])
    assert after["attributes"]["Serial number"] == "SN-EDITED-IN-C2"
    assert after["version"] == before["version"] + 1
    said = latest_metadata("hector_writeback", "printers")
    assert "wrote_nothing" not in said and said["plan_applied"] >= 1, said


# --- 3. a stale plan is refused -------------------------------------------------------------------------


def test_a_plan_superseded_by_a_newer_read_is_refused_until_allowed(
    synced: SyncConfig, sims: RunningSimulators
) -> None:
    config = synced
    before = edit_one_printer(config, "SN-STALE")

    planned = ok(cli(config, "plan", "--category", "printers"))
    [plan_id] = plan_ids(planned.stdout)
    assert plan_id.startswith("printers.hector."), planned.stdout
    ok(materialize(config, "c2_cmdb_snapshot", "printers"))  # a newer read of C2 ITSM
    reset(sims.c2_url, sims.hector_url)

    refused = cli(config, "apply", plan_id)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert writes(sims.hector_url) == {}, "a superseded plan was written"
    assert f"plan {plan_id} (computed " in said and " s ago)" in said, said
    assert "is superseded: C2 ITSM was read again at " in said and "after the read it was computed from" in said, said
    assert asset(config, before["id"])["attributes"]["Serial number"] == before["attributes"]["Serial number"]

    allowed = cli(config, "apply", plan_id, "--allow-stale-plan")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert both_writes(sims) == {"c2": {}, "hector": {ASSET_PATCH: 1}}
    assert asset(config, before["id"])["attributes"]["Serial number"] == "SN-STALE"


def test_a_plan_replaced_by_a_newer_one_is_refused_even_when_staleness_is_allowed(
    synced: SyncConfig, sims: RunningSimulators
) -> None:
    config = synced
    before = edit_one_printer(config, "SN-REPLACED")
    [first] = plan_ids(ok(cli(config, "plan", "--category", "printers")).stdout)
    [second] = plan_ids(ok(cli(config, "plan", "--category", "printers")).stdout)
    assert first != second
    reset(sims.c2_url, sims.hector_url)

    refused = cli(config, "apply", first, "--allow-stale-plan")
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert f"plan {first} was replaced by plan {second}, computed from newer reads" in said, said
    assert writes(sims.hector_url) == {}, "a replaced plan was written"
    assert asset(config, before["id"])["attributes"]["Serial number"] == before["attributes"]["Serial number"]


def test_a_plan_older_than_max_plan_age_is_refused(write_config: WriteConfig, sims: RunningSimulators) -> None:
    sync(configure(write_config, sims), "printers")  # its own plan must not age past 1 s on a busy machine
    config = configure(write_config, sims, max_plan_age="1s")  # the same DuckDB file, from here on
    before = edit_one_printer(config, "SN-OLD-PLAN")
    [plan_id] = plan_ids(ok(cli(config, "plan", "--category", "printers")).stdout)
    time.sleep(1.5)
    reset(sims.c2_url, sims.hector_url)

    refused = cli(config, "apply", plan_id)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert f"plan {plan_id} (computed " in said and "is older than max_plan_age 1 s" in said, said
    assert writes(sims.hector_url) == {}, "a plan older than max_plan_age was written"
    assert asset(config, before["id"])["attributes"]["Serial number"] == before["attributes"]["Serial number"]


# --- 4. an item edited since the plan is a conflict, never overwritten ----------------------------------


def test_an_asset_edited_by_hand_after_the_plan_is_a_conflict_not_overwritten(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims)
    sync(config, "printers")
    (ci_a, asset_a), (ci_b, asset_b) = linked_printers(config, 2)
    patch_ci(config, ci_a, SerialNumber="SN-PLANNED-A")
    patch_ci(config, ci_b, SerialNumber="SN-PLANNED-B")
    planned = ok(cli(config, "plan", "--category", "printers"))
    [plan_id] = plan_ids(planned.stdout)
    assert "2 update_asset" in planned.stdout, planned.stdout
    patch_asset(config, asset_b["id"], attributes={**asset_b["attributes"], "Serial number": "TYPED-BY-HAND"})
    reset(sims.c2_url, sims.hector_url)

    applied = cli(config, "apply", plan_id)
    said = applied.stdout + applied.stderr
    assert f"applying plan {plan_id}" in said, said
    assert both_writes(sims) == {"c2": {}, "hector": {ASSET_PATCH: 2}}  # one taken, one refused by If-Match
    assert asset(config, asset_a["id"])["attributes"]["Serial number"] == "SN-PLANNED-A"
    assert asset(config, asset_b["id"])["attributes"]["Serial number"] == "TYPED-BY-HAND", "a person's edit was overwritten"
    store = Store(config.storage.duckdb_path)
    outcomes = store.query(
        "SELECT item, outcome, plan_id FROM change_history WHERE action = 'update_asset' AND plan_id = ? ORDER BY item",
        [plan_id]).rows()
    assert outcomes == sorted([(ci_a, "updated", plan_id), (ci_b, "conflict", plan_id)])
    states = dict(store.query("SELECT item, state FROM change_set WHERE plan_id = ? AND action = 'update_asset'",
                              [plan_id]).rows())
    assert states == {ci_a: "applied", ci_b: "conflict"}
    # The pairs that already agreed have no rows: the plan counts them, and says so after the apply too.
    agreed = re.search(r"(\d+) unchanged", planned.stdout)
    assert agreed and int(agreed.group(1)) > 0, planned.stdout
    assert re.search(rf"plan {plan_id}: items 1 applied, 1 conflict, .*\b{agreed.group(1)} unchanged", said), said


# --- 5. killed halfway, re-executed from failure --------------------------------------------------------


def printers_job() -> dg.JobDefinition:
    """The job `hector-sync sync` runs printers in, rebuilt from $HECTOR_SYNC_CONFIG (reconstructable)."""
    return build_definitions(os.environ[CONFIG_ENV_VAR]).resolve_job_def("c2_to_hector_sync")


def test_a_writeback_killed_halfway_and_reexecuted_from_failure_sends_each_item_once(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_simulators(size=40, sizes={"Printers": 300}) as sims:
        config = load_config(write_config(sims.c2_url, sims.hector_url, edit=printers_only))
        monkeypatch.setenv(CONFIG_ENV_VAR, str(config.source))
        requests.put(f"{sims.hector_url}/_sim/faults", json={"latency_s": 0.05}, timeout=5).raise_for_status()
        proc = subprocess.Popen([HECTOR_SYNC, "--config", str(config.source), "sync", "--category", "printers"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        kill_when(proc, lambda: writes(sims.hector_url).get(ASSET_POST, 0) >= 100)
        time.sleep(0.3)  # the calls in flight when it died are answered
        requests.put(f"{sims.hector_url}/_sim/faults", json={}, timeout=5).raise_for_status()
        killed_run = sim_stats(sims.hector_url)
        store = Store(config.storage.duckdb_path)
        creates = store.query("SELECT count(DISTINCT item) FROM change_set WHERE action = 'create_asset'").item()
        sent = killed_run["by_route"][ASSET_POST]
        assert 100 <= sent < creates, f"the kill missed the writeback ({sent} of {creates} creates sent)"
        states = dict(store.query("SELECT state, count(DISTINCT item) FROM change_set WHERE action = 'create_asset' "
                                  "GROUP BY 1").rows())
        assert states.get("sending") and states.get("planned"), states  # killed inside a batch, before the last
        made_before = len({r for a in hector_state(config, "Printers")[1] for r in refs(a)})
        # The calls cut by the kill never reached Hector: every other create was taken (201), and no 409.
        assert "409" not in killed_run["by_status"], killed_run
        assert sent - made_before == killed_run["by_status"].get("dropped", 0), killed_run
        assert killed_run["by_status"]["201"] - killed_run["by_route"].get(SUBCATEGORY_POST, 0) == made_before
        reset(sims.hector_url)

        with dg.DagsterInstance.get() as instance:
            [killed] = instance.get_runs(limit=1)
            assert killed.status == dg.DagsterRunStatus.STARTED, killed.status  # nobody ended it
            instance.report_run_failed(killed)  # as run monitoring would
            again = dg.execute_job(
                dg.reconstructable(printers_job), instance,
                reexecution_options=dg.ReexecutionOptions.from_failure(killed.run_id, instance),
                tags={k: v for k, v in killed.tags.items() if not k.startswith(".dagster")},
            )
            assert again.success, [e.message for e in again.all_events if e.is_failure]
            steps = {e.step_key for e in again.all_events if e.is_step_success}
            assert steps == {"hector_writeback"}, steps  # only what had not finished

        _, assets, _ = hector_state(config, "Printers")
        held = Counter(r for a in assets for r in refs(a))
        assert held and max(held.values()) == 1, [ci for ci, n in held.items() if n > 1][:5]
        assert len(held) == creates, "Hector does not hold one asset per planned create"
        rerun = sim_stats(sims.hector_url)
        assert rerun["by_route"][ASSET_POST] == creates - made_before, "an asset create was sent twice"
        assert rerun["by_status"]["201"] == creates - made_before, rerun  # each taken at first try
        assert SUBCATEGORY_POST not in rerun["by_route"], "a subcategory create was sent twice"
        assert "409" not in rerun["by_status"], rerun
        states = dict(store.query("SELECT state, count(*) FROM change_set GROUP BY 1").rows())
        assert not {"planned", "sending", "failed"} & set(states), states
