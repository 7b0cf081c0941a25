"""Two runs of one category at once, and runs killed at any point: state stays right.

Real processes (`hector-sync sync`), real SIGKILLs, real simulators over HTTP; afterwards the
two systems are read back through their APIs and the DuckDB file is opened again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from hector_sync.config import SyncConfig, load_config
from hector_sync.definitions import build_definitions
from hector_sync.notify import failure_report
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import c2_cis, hector_state, refs, sync

HECTOR_SYNC = str(Path(sys.executable).with_name("hector-sync"))
PRINTERS = 300


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=40, sizes={"Printers": PRINTERS}) as running:
        yield running


@pytest.fixture
def config(write_config: WriteConfig, sims: RunningSimulators) -> SyncConfig:
    def edit(data: dict) -> None:
        data["categories"] = [c | {"on_missing": "retire"} for c in data["categories"] if c["key"] == "printers"]

    return load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))


def start_sync(config: SyncConfig, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([HECTOR_SYNC, "--config", str(config.source), "sync", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())


def hector_calls(sims: RunningSimulators) -> dict[str, int]:
    return requests.get(f"{sims.hector_url}/_sim/stats", timeout=5).json()["by_status"]


def wait_until(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str] | None = None,
               timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the sync ended before {what}:\n{proc.stdout.read() if proc.stdout else ''}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def asset_posts(sims: RunningSimulators) -> int:
    routes = requests.get(f"{sims.hector_url}/_sim/stats", timeout=5).json()["by_route"]
    return routes.get("POST /api/v1/assets", 0)


def assert_synced_once(config: SyncConfig) -> None:
    """Every valid printer has exactly one asset, and no asset was made twice."""
    _, assets, _ = hector_state(config, "Printers")
    held = Counter(r for a in assets for r in refs(a))
    assert held and max(held.values()) == 1, [ci for ci, n in held.items() if n > 1][:5]
    store = Store(config.storage.duckdb_path)
    planned = store.query("SELECT count(DISTINCT item) FROM change_set WHERE action IN ('create_asset', 'unchanged', "
                          "'update_asset', 'link_asset', 'move_asset')").item()
    assert len(held) == planned, "Hector does not hold one asset per CI the change set knows"


def test_a_second_run_of_the_same_category_waits_and_a_short_wait_is_refused(
    config: SyncConfig, sims: RunningSimulators
) -> None:
    # Slow Hector down so the first run is still writing when the others start.
    requests.put(f"{sims.hector_url}/_sim/faults", json={"latency_s": 0.01}, timeout=5).raise_for_status()
    first = start_sync(config, "--category", "printers", "--full")
    wait_until(lambda: asset_posts(sims) > 20, "the first run's writeback", first)
    second = start_sync(config, "--category", "printers", "--full")

    # A manual rematerialization that will not wait long is refused, saying who holds the category.
    defs = build_definitions(str(config.source))
    with dg.DagsterInstance.get() as instance:
        manual = defs.resolve_job_def("c2_to_hector_sync").execute_in_process(
            partition_key="printers", instance=instance, raise_on_error=False,
            run_config={"resources": {"store": {"config": {"lock_wait_s": 0.5}}}},
        )
        assert not manual.success
        errors = " ".join(failure_report(instance, manual.run_id).errors)
    assert "category 'printers' is being synced by run " in errors and "c2_to_hector_sync" in errors, errors
    assert "waited 0.5 s" in errors and "gave up without reading or writing anything" in errors, errors

    first_out, _ = first.communicate(timeout=180)
    second_out, _ = second.communicate(timeout=180)
    assert first.returncode == 0, first_out
    assert second.returncode == 0, second_out  # it waited, then found nothing left to do
    created = [line.split() for line in second_out.splitlines() if line.startswith("printers ")]
    assert created and created[0][3] == "0", second_out  # the second run created nothing
    assert "409" not in hector_calls(sims), "a run wrote what the other had written"
    assert_synced_once(config)
