"""A server's rate limit counts every run's calls: two runs at once stay under it together.

Two real `hector-sync sync` processes, one category each, started at the same moment against
simulators that enforce the limit themselves (429 over it) and count the calls of each second.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
import requests

from hector_sync.config import SyncConfig, load_config
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.transport import BURST_S
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import hector_state
from hector_sync_tests.test_crash_safety import start_sync

# Calls per second, configured in both systems and enforced by both simulators: slow enough that
# each first sync's 90 creates take 9 s alone, so the two runs overlap however late one starts.
RATE = 10


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=40, sizes={"Printers": 90, "Laptops": 90}) as running:
        yield running


@pytest.fixture
def config(write_config: WriteConfig, sims: RunningSimulators) -> SyncConfig:
    def limited(data: dict) -> None:
        data["c2"]["rate_limit_per_s"] = RATE
        data["hector"]["rate_limit_per_s"] = RATE
        data["categories"] = [c for c in data["categories"] if c["key"] in ("printers", "laptops")]

    return load_config(write_config(sims.c2_url, sims.hector_url, edit=limited))


def test_two_runs_at_once_share_one_rate_limit(config: SyncConfig, sims: RunningSimulators) -> None:
    urls = (sims.c2_url, sims.hector_url)
    for url in urls:
        requests.put(f"{url}/_sim/faults", json={"rate_limit_per_s": RATE}, timeout=5).raise_for_status()

    runs = [start_sync(config, "--category", key, "--full") for key in ("printers", "laptops")]
    for proc in runs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out

    stats = {url: requests.get(f"{url}/_sim/stats", timeout=5).json() for url in urls}
    # the two first syncs created their assets at the same time (Hector stamps each write)
    written = {category: [datetime.fromisoformat(a["updated_at"]) for a in hector_state(config, category)[1]]
               for category in ("Printers", "Laptops")}
    assert all(len(stamps) >= 80 for stamps in written.values())
    overlap = min(map(max, written.values())) - max(map(min, written.values()))
    assert overlap.total_seconds() >= 2, f"the two writebacks did not overlap: {overlap}"
    # paced together: the busiest second holds one second's worth, plus the burst a pause allows
    ceiling = RATE * (1 + BURST_S) + 1
    for url, seen in stats.items():
        assert seen["peak_calls_per_s"] <= ceiling, f"{url}: {seen['peak_calls_per_s']} calls in one second"
        assert "429" not in seen["by_status"], f"{url} refused {seen['by_status']['429']} calls over its limit"


def test_the_budget_is_kept_beside_the_duckdb_file(config: SyncConfig, sims: RunningSimulators) -> None:
    """An operator looking for the shared state finds it with the rest of the sync's state."""
    proc = start_sync(config, "--category", "printers")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    budgets = sorted(p.name for p in config.storage.duckdb_path.parent.glob("*.budget"))
    host = {url: url.removeprefix("http://").replace(":", "-") for url in (sims.c2_url, sims.hector_url)}
    name = config.storage.duckdb_path.name
    assert budgets == sorted([f"{name}.c2-{host[sims.c2_url]}.budget", f"{name}.hector-{host[sims.hector_url]}.budget"])

