"""`hector-sync plan` is the category's own Dagster job, stopped before its writebacks.

So a plan takes exactly the steps of a sync, its blocking checks run and are recorded in the
run, and the guard's verdict is the one made with the plan: what the plan prints, what the
check says and what `apply` enforces. End to end: the console script, both simulators over
HTTP, a real DuckDB file, the Dagster instance the command records its runs in, a real SMTP
server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import dagster as dg
import pytest

from hector_sync.definitions import build_definitions
from hector_sync.defs.resources import build_resources
from hector_sync.defs.tags import PLAN_TAG
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import Mailbox, WriteConfig
from hector_sync_tests.console import hector_sync
from hector_sync_tests.systems import configure, linked_assets, reset, set_ci_status, sync, writes

PRINTERS = {
    "key": "printers", "cmdb": "Production", "c2_category": "Printers", "hector_category": "Printers",
    "direction": "c2_to_hector", "on_missing": "retire",
    "model": {"maker": "Manufacturer", "model": "Model", "description": "Description"},
    "asset": {"title": "Name", "asset_tag": "AssetTag"},
}
UP_TO_THE_CHANGE_SET = {"category_catalog", "c2_cmdb_snapshot", "hector_inventory_snapshot", "desired_hector_models",
                        "hector_change_set"}


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=40) as running:
        yield running


def test_a_plan_runs_the_sync_job_up_to_its_checks_and_apply_keeps_its_guard_verdict(
    write_config: WriteConfig, sims: RunningSimulators, mailbox: Mailbox,
) -> None:
    config = configure(write_config, sims, PRINTERS)
    sync(config, "printers")
    linked = sorted(ci for ci, a in linked_assets(config, "Printers").items() if a["status"] != "retired")
    gone = linked[: len(linked) // 2]  # half the category retired in C2 ITSM: a wipe, by the guard
    set_ci_status(config, gone, "retired")
    reset(sims.c2_url, sims.hector_url)

    planned = hector_sync("--config", str(config.source), "plan", "--category", "printers")

    out = planned.stdout
    assert planned.returncode == 1, out + planned.stderr[-3000:]
    assert f"printers (c2_to_hector): {len(gone)} retire_asset" in out, out
    assert f"the guard holds this back: the change set would retire or move {len(gone)} of {len(linked)} linked " \
           "assets" in out and "(--allow-large-change lets it through)" in out, out
    [plan_id] = re.findall(r"^  plan (\S+) ", out, re.MULTILINE)
    [run_id] = re.findall(r"^printers: FAILED \(run (\S+)\): .*change_size_guard", out, re.MULTILINE)
    assert {"c2": writes(sims.c2_url), "hector": writes(sims.hector_url)} == {"c2": {}, "hector": {}}
    assert mailbox.messages == [], "a plan e-mailed: whoever asked for it reads its output"

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.job_name == "c2_to_hector_sync" and run.tags[PLAN_TAG] == "true"
        assert run.tags["dagster/partition"] == "printers"
        records = instance.get_records_for_run(run_id).records
        materialized = {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records
                        if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION"}
        checks = {e.check_name: e for e in (r.event_log_entry.dagster_event.event_specific_data for r in records
                  if r.event_log_entry.dagster_event
                  and r.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION")}
    assert materialized == UP_TO_THE_CHANGE_SET, "a plan takes the steps of a sync up to its change set, no writeback"
    assert {name: c.passed for name, c in checks.items()} == \
           {"mapping_valid": True, "unique_ci_ids": True, "change_size_guard": False}
    assert checks["change_size_guard"].metadata["plan_id"].value == plan_id

    # With a daemon, the failure sensor sees the failed plan run, and e-mails nobody either.
    defs = build_definitions(str(config.source))
    sensor = defs.resolve_sensor_def("email_on_sync_failure")
    with dg.DagsterInstance.get() as instance:
        [failure] = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        with dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=instance.get_run_by_id(run_id),
            dagster_event=failure.event_log_entry.dagster_event,
            resources={"smtp": build_resources(str(config.source))["smtp"]},
        ).for_run_failure() as context:
            sensor(context)
    assert mailbox.messages == [], "the sensor e-mailed a plan's failure"

    # `apply` holds to the verdict made with the plan, and lets it through only when told to.
    held = hector_sync("--config", str(config.source), "apply", plan_id)
    assert held.returncode == 1, held.stdout + held.stderr
    assert f"would retire or move {len(gone)} of {len(linked)} linked assets" in held.stdout, held.stdout
    assert writes(sims.hector_url) == {}, "the guard let the plan through"
    done = hector_sync("--config", str(config.source), "apply", plan_id, "--allow-large-change")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    retired = {ci for ci, a in linked_assets(config, "Printers").items() if a["status"] == "retired"}
    assert retired == set(gone)
