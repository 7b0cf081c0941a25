"""Two runs of one category at once, and runs killed at any point: state stays right.

Real processes (`hector-sync sync`), real SIGKILLs, real simulators over HTTP; afterwards the
two systems are read back through their APIs and the DuckDB file is opened again.
"""

from __future__ import annotations

import os
import random
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
from hector_sync_tests.systems import hector_state, printers_retiring, refs, sync

HECTOR_SYNC = str(Path(sys.executable).with_name("hector-sync"))
PRINTERS = 300


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=40, sizes={"Printers": PRINTERS}) as running:
        yield running


@pytest.fixture
def config(write_config: WriteConfig, sims: RunningSimulators) -> SyncConfig:
    return load_config(write_config(sims.c2_url, sims.hector_url, edit=printers_retiring))


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
    planned = store.query("SELECT count(DISTINCT item) FROM change_set WHERE action IN ('create_asset', "
                          "'update_asset', 'link_asset', 'move_asset')").item() + store.query(
        "SELECT unchanged FROM plan WHERE kind = 'sync' AND direction = 'c2_to_hector' ORDER BY planned_at DESC LIMIT 1"
    ).item()
    assert len(held) == planned, "Hector does not hold one asset per CI the change set knows"


def test_a_second_run_of_the_same_category_waits_and_a_short_wait_is_refused(
    config: SyncConfig, sims: RunningSimulators
) -> None:
    # Slow Hector down so the first run is still writing when the others start (8 writers at
    # 0.1 s a call: about 4 s for its 300 creates).
    requests.put(f"{sims.hector_url}/_sim/faults", json={"latency_s": 0.1}, timeout=5).raise_for_status()
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


# --- SIGKILL at any point ---------------------------------------------------------------------

REFERENCE = 1_795_000_000  # fixed "now" of the sample data, so every fresh simulator is identical
Kill = Callable[[RunningSimulators, Store, float], bool]
KILL_POINTS: dict[str, Callable[[int], Kill]] = {
    # pages of CIs read so far (C2 is slowed down, so the snapshot takes a while)
    "snapshot": lambda n: lambda sims, store, since: _route(sims.c2_url, "GET /api/v1/cmdbs/{cmdb_id}/cis") >= n,
    # the change set is stored and the writeback is about to start
    "before_writeback": lambda _: lambda sims, store, since: _planned_after(store, since),
    # assets created so far
    "writeback": lambda n: lambda sims, store, since: _route(sims.hector_url, "POST /api/v1/assets") >= n,
}


def _route(url: str, route: str) -> int:
    return requests.get(f"{url}/_sim/stats", timeout=5).json()["by_route"].get(route, 0)


def _planned_after(store: Store, since: float) -> bool:
    if not store.path.exists():
        return False
    latest = store.query("SELECT epoch(max(planned_at)) FROM change_set").item()
    return latest is not None and latest >= since


def hector_content(config: SyncConfig) -> list[tuple]:
    """What Hector holds, without the ids and versions a rerun may legitimately change."""
    models, assets, _ = hector_state(config, "Printers")
    return sorted(
        (tuple(refs(a)), a["title"], a["asset_tag"], a["acquisition_date"], a["end_of_life_date"], a["status"],
         tuple(sorted(a["attributes"].items())),
         tuple(models[a["subcategory_id"]][k] for k in ("maker", "model", "description", "price")))
        for a in assets
    )


@pytest.fixture
def fresh(write_config: WriteConfig, tmp_path: Path) -> Iterator[Callable[[str], tuple[RunningSimulators, SyncConfig]]]:
    """Identical simulators, each with its own DuckDB file, for one sync history each."""
    started: list[RunningSimulators] = []

    def make(name: str) -> tuple[RunningSimulators, SyncConfig]:
        sims = start_simulators(size=40, sizes={"Printers": PRINTERS}, reference=REFERENCE)
        started.append(sims)

        def edit(data: dict) -> None:
            data["categories"] = [c for c in data["categories"] if c["key"] == "printers"]
            data["storage"]["duckdb_path"] = str(tmp_path / name / "hector_sync.duckdb")

        return sims, load_config(write_config(sims.c2_url, sims.hector_url, edit=edit, name=f"{name}.yaml"))

    yield make
    for sims in started:
        sims.stop()


Fresh = Callable[[str], tuple[RunningSimulators, SyncConfig]]


def kill_and_recover(fresh: Fresh, name: str, kill: Kill) -> SyncConfig:
    """On fresh simulators, kill a full sync where `kill` says, then sync normally."""
    sims, config = fresh(name)
    requests.put(f"{sims.c2_url}/_sim/faults", json={"latency_s": 0.05}, timeout=5).raise_for_status()
    requests.put(f"{sims.hector_url}/_sim/faults", json={"latency_s": 0.005}, timeout=5).raise_for_status()
    store = Store(config.storage.duckdb_path)
    since = time.time()
    proc = start_sync(config, "--full")
    try:
        wait_until(lambda: kill(sims, store, since), "the kill point", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    for url in (sims.c2_url, sims.hector_url):
        requests.put(f"{url}/_sim/faults", json={}, timeout=5).raise_for_status()
    sync(config, "printers")
    return config


def uninterrupted(fresh: Fresh) -> list[tuple]:
    _, reference = fresh("reference")
    sync(reference, "printers")
    expected = hector_content(reference)
    assert len(expected) > PRINTERS * 0.9
    return expected


def test_a_sync_killed_anywhere_recovers_to_the_state_of_an_uninterrupted_one(fresh: Fresh) -> None:
    expected = uninterrupted(fresh)
    for point, threshold in (("snapshot", 1), ("before_writeback", 0), ("writeback", PRINTERS // 2)):
        config = kill_and_recover(fresh, point, KILL_POINTS[point](threshold))
        assert hector_content(config) == expected, f"killed at {point}: Hector differs from an uninterrupted sync"
        assert_synced_once(config)


@pytest.mark.soak
def test_soak_twelve_kills_at_random_points(fresh: Fresh) -> None:
    expected = uninterrupted(fresh)
    dice = random.Random(20261128)
    for n in range(12):
        point = dice.choice(list(KILL_POINTS))
        # 300 printers are one C2 page, and about 290 of them valid creates: points inside the run
        threshold = {"snapshot": 1, "before_writeback": 0, "writeback": dice.randint(1, PRINTERS * 3 // 4)}[point]
        config = kill_and_recover(fresh, f"kill-{n}", KILL_POINTS[point](threshold))
        assert hector_content(config) == expected, f"kill {n} at {point} ({threshold}): Hector differs"
        assert_synced_once(config)
