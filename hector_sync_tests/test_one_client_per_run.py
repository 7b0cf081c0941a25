"""One client per system serves a whole run: a category's run logs in to C2 ITSM once, and
lists the names its mapping resolves against once.

Counted at the simulator, for the two ways a run starts: Dagster's own (a job or a
materialization, each run setting up its `c2` and `hector` resources) and `hector-sync sync`,
which hands the same two clients to every category it runs.
"""

from __future__ import annotations

import dagster as dg
import pytest
import requests
import yaml

from hector_sync.config import SyncConfig
from hector_sync.defs.jobs import JOB_OF
from hector_sync.defs.tags import READ_TAG
from hector_sync.definitions import build_definitions
from hector_sync.runner import run_sync
from hector_sync.demo import DEMO_CONFIG_PATH
from hector_sync.simulators.serve import RunningSimulators
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import configure, reset, sync

SYNCING = ("printers", "laptops", "monitors")


def calls(sims: RunningSimulators, route: str) -> int:
    return requests.get(f"{sims.c2_url}/_sim/stats", timeout=5).json()["by_route"].get(route, 0)


@pytest.fixture
def config(write_config: WriteConfig, simulators: RunningSimulators) -> SyncConfig:
    demo = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))["categories"]
    config = configure(write_config, simulators, *(c for c in demo if c["key"] in SYNCING))
    reset(simulators.c2_url, simulators.hector_url)
    return config


def test_a_dagster_run_of_one_category_logs_in_once(config: SyncConfig, simulators: RunningSimulators) -> None:
    job = build_definitions(str(config.source)).resolve_job_def(JOB_OF[config.category("printers").direction])
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = job.execute_in_process(partition_key="printers", instance=instance, tags={READ_TAG: "full"})
    assert outcome.success
    # its steps called C2 ITSM several times (the names listed once for their resolution and
    # their check, then the CIs read)...
    assert calls(simulators, "GET /api/v1/cmdbs") == 1 and calls(simulators, "GET /api/v1/cmdbs/{cmdb_id}/cis") >= 1
    # ...on one session
    assert calls(simulators, "POST /api/v1/auth/login") == 1


def test_hector_sync_logs_in_once_for_all_its_categories(config: SyncConfig, simulators: RunningSimulators) -> None:
    sync(config, *SYNCING)
    assert calls(simulators, "POST /api/v1/auth/login") == 1


def test_names_are_listed_once_per_command_and_again_by_the_next(
    config: SyncConfig, simulators: RunningSimulators,
) -> None:
    """Every category of a command resolves its names (and checks them before its writeback)
    from one listing; the next command lists them afresh, so a rename between two is seen."""

    def rename(name: str) -> None:
        requests.patch(f"{simulators.c2_url}/_sim/cmdbs/cmdb-1", json={"name": name}, timeout=5).raise_for_status()

    sync(config, *SYNCING)
    assert calls(simulators, "GET /api/v1/cmdbs") == 1
    assert calls(simulators, "GET /api/v1/cmdbs/{cmdb_id}/categories/{category_id}/fields") == len(SYNCING)
    rename("Renamed")
    try:
        results = run_sync(config, str(config.source), ["printers"])
    finally:
        rename("Production")
    assert calls(simulators, "GET /api/v1/cmdbs") == 2
    assert not results[0].success and "no CMDB named 'Production' (found: Renamed, Lab)" in (results[0].error or "")
