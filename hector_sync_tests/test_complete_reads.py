"""A read is complete, or it is refused.

A listing that ends early, skips or repeats a page, never ends, or outlasts `max_read_time`
fails that side's snapshot with an error naming the system, the category and what was wrong;
the last good snapshot stays, and nothing is retired or moved on its account. So does an answer
that no page can be: larger than the cap, or holding text that is not UTF-8.

One pair of simulators and one DuckDB file serve the fault tests: two good syncs of 600 printers
(two C2 ITSM pages of 500, one Hector page) that retire assets whose CI is gone, then one fault
per test, switched on in a simulator for one `hector-sync sync --category printers --full` (a
full read: where a short listing used to retire what it missed). That sync must fail and leave
both systems and the snapshot tables as the good syncs left them, so every test starts from the
same state. The last test has simulators of its own: the one repeat a listing may show.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import requests
import yaml
from aiosmtpd.controller import Controller

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.demo import DEMO_C2_PASSWORD, DEMO_C2_USERNAME, DEMO_CONFIG_PATH
from hector_sync.http import MAX_ANSWER_BYTES
from hector_sync.instance import local_instance
from hector_sync.simulators.sample_data import category, ci_id
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.state import SyncState
from hector_sync.store import Store
from hector_sync_tests.conftest import Mailbox, demo_credentials, free_port
from hector_sync_tests.console import hector_sync
from hector_sync_tests.systems import hector_state, printers_retiring, reset, sync, writes

PRINTERS = 600  # two C2 ITSM pages (500 + 100) in a snapshot read; one Hector page (1,000)
CIS = "GET /api/v1/cmdbs/cmdb-1/cis"
REFUSED = "the snapshot is refused and the last good one kept"
TABLES = ("c2_ci", "hector_subcategory", "hector_asset")


@dataclass(frozen=True)
class World:
    sims: RunningSimulators
    config: SyncConfig
    folder: Path
    last_good: dict[str, object]
    assets: dict[int, tuple]  # after the good syncs: asset id → (status, version, subcategory)


def snapshot(config: SyncConfig) -> dict[str, object]:
    """The printers' snapshot tables' row counts and what each side's last good read recorded."""
    store = Store(config.storage.duckdb_path)
    found: dict[str, object] = {
        table: store.query(f"SELECT count(*) FROM {table} WHERE category_key = 'printers'").item()
        for table in TABLES
    }
    for system in ("c2", "hector"):
        state = SyncState(store).snapshot_states("printers").get(system, {})
        found[system] = (state.get("read_kind"), state.get("run_id"), state.get("row_count"), state.get("read_at"))
    return found


def printer_assets(config: SyncConfig) -> dict[int, tuple]:
    """Hector's printers, read without any fault: asset id → (status, version, subcategory)."""
    _, assets, _ = hector_state(config, "Printers")
    return {a["id"]: (a["status"], a["version"], a["subcategory_id"]) for a in assets}


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("complete_reads")
    box = Mailbox(port=free_port())
    smtp = Controller(box, hostname=box.host, port=box.port)
    smtp.start()
    try:
        with pytest.MonkeyPatch.context() as env, start_simulators(size=40, sizes={"Printers": PRINTERS}) as sims:
            demo_credentials(env)
            home = local_instance(folder / "dagster_home")
            env.setenv("DAGSTER_HOME", str(home))
            data = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))
            data["c2"]["url"], data["hector"]["url"] = sims.c2_url, sims.hector_url
            data["smtp"].update(host=box.host, port=box.port)
            data["storage"]["duckdb_path"] = str(folder / "hector_sync.duckdb")
            printers_retiring(data)
            path = folder / "config.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            config = load_config(path)

            sync(config, "printers")
            sync(config, "printers")  # settled: both snapshots now hold what the first sync made
            assets = printer_assets(config)
            assert len(assets) > 500 and all(status != "retired" for status, _, _ in assets.values())
            yield World(sims, config, folder, snapshot(config), assets)
    finally:
        smtp.stop()


@pytest.fixture
def world(settled: World) -> Iterator[World]:
    """The settled world with its call statistics reset, and every fault off afterwards."""
    reset(settled.sims.c2_url, settled.sims.hector_url)
    yield settled
    for url in (settled.sims.c2_url, settled.sims.hector_url):
        requests.put(f"{url}/_sim/faults", json={}, timeout=5).raise_for_status()


def fault(url: str, **switches: object) -> None:
    requests.put(f"{url}/_sim/faults", json=switches, timeout=5).raise_for_status()


def refused_and_nothing_moved(world: World, side: str, config: Path | None = None, timeout: float = 120) -> str:
    """Run the sync; insist it failed, wrote nothing anywhere, retired nothing, kept every
    snapshot table as it was and recorded no read of the faulty `side`. Returns its output."""
    before = snapshot(world.config)
    assert {t: before[t] for t in TABLES} == {t: world.last_good[t] for t in TABLES}
    done = hector_sync("--config", str(config or world.config.source), "sync", "--category", "printers", "--full",
                       timeout=timeout)
    assert done.returncode == 1, done.stdout + done.stderr
    assert writes(world.sims.c2_url) == {} and writes(world.sims.hector_url) == {}, done.stdout
    for url in (world.sims.c2_url, world.sims.hector_url):  # read back without any fault
        requests.put(f"{url}/_sim/faults", json={}, timeout=5).raise_for_status()
    assert printer_assets(world.config) == world.assets, "an asset was retired, moved or changed"
    now = snapshot(world.config)
    assert {t: now[t] for t in TABLES} == {t: before[t] for t in TABLES}, "a snapshot table changed"
    assert now[side] == before[side], f"the refused read of {side} was recorded as a snapshot"
    return done.stdout


@pytest.mark.parametrize(
    ("switches", "words"),
    [
        pytest.param({"listing_short": 100}, f"C2 ITSM listed 500 of the 600 CIs it announced for category Printers "
                     f"({CIS}: the listing ended after 1 page, where its total_count makes 2); {REFUSED}", id="short"),
        pytest.param({"listing_skip_page": 1}, f"C2 ITSM listed 100 CIs twice for category Printers ({CIS}: page 2 "
                     f"answered CIs of an earlier page: the listing skips or repeats pages); {REFUSED}", id="skip"),
        pytest.param({"listing_repeat_page": 2}, f"C2 ITSM listed 500 CIs twice for category Printers ({CIS}: page 2 "
                     f"answered CIs of an earlier page: the listing skips or repeats pages); {REFUSED}", id="repeat"),
        pytest.param({"listing_endless": True}, f"C2 ITSM kept listing CIs past the 600 it announced for category "
                     f"Printers ({CIS}: page 3 still held 100 CIs, beyond the 2 pages its total_count makes: the "
                     f"listing does not end); {REFUSED}", id="endless"),
    ],
)
def test_a_c2_listing_that_does_not_account_for_its_total_count_is_refused(
    world: World, switches: dict, words: str
) -> None:
    fault(world.sims.c2_url, **switches)
    printed = refused_and_nothing_moved(world, "c2", timeout=90)  # endless would otherwise page for ever
    assert words in printed, printed


def test_a_short_hector_listing_is_refused(world: World) -> None:
    fault(world.sims.hector_url, listing_short=30, listing_lists=["assets"])
    printed = refused_and_nothing_moved(world, "hector")
    total = world.last_good["hector_asset"]
    words = (f"Hector listed {total - 30} of the {total} assets it announced for category Printers "
             f"(GET /api/v1/assets: the listing ended after 2 pages, where its total makes 1); {REFUSED}")
    assert words in printed, printed


def test_an_answer_bigger_than_any_page_is_refused(world: World) -> None:
    """A proxy streaming an endless body: the read stops at the cap instead of eating memory."""
    fault(world.sims.hector_url, pad_answer_bytes=MAX_ANSWER_BYTES + 1, chunked_answers=True)
    printed = refused_and_nothing_moved(world, "hector")
    assert ("Hector gave an answer hector_sync did not expect (GET /api/v1/categories, 200): its body ran past "
            "the 64 MiB an answer may hold, far above the contract's largest page; reading stopped there") in printed, printed


def rename_ci(config: SyncConfig, ci: str, name: str) -> str:
    """As a person would in C2 ITSM; returns the name it had."""
    with C2Client.from_settings(config.c2) as c2:
        current = c2.get_ci(ci)
        assert current is not None
        c2.update_ci(ci, current["version"], name=name)
    return current["name"]


def test_a_ci_whose_text_is_not_utf8_is_refused_naming_it(world: World) -> None:
    """Read as requests reads it, the Latin-1 "ü" of "Drucker Müller" became U+FFFD, and that
    title went to Hector."""
    printer = ci_id("Printers", 550)  # on the second page: the first is already staged when the read fails
    original = rename_ci(world.config, printer, "Drucker Müller")
    try:
        reset(world.sims.c2_url)  # that edit was a person's, not the sync's
        fault(world.sims.c2_url, latin1_items=[printer])
        printed = refused_and_nothing_moved(world, "c2")
    finally:
        rename_ci(world.config, printer, original)
    assert (f'C2 ITSM answered {CIS} with bytes that are not UTF-8 in item {printer} (name "Drucker M\\xfcller") '
            'at name = "Drucker M\\xfcller"') in printed, printed
    assert "\ufffd" not in printed


def test_a_read_slower_than_max_read_time_is_abandoned(world: World) -> None:
    data = yaml.safe_load(world.config.source.read_text(encoding="utf-8"))
    impatient = world.folder / "impatient.yaml"
    impatient.write_text(yaml.safe_dump(data | {"max_read_time": "2s"}, sort_keys=False), encoding="utf-8")
    # every C2 ITSM call takes 2.1 s: the first page outlasts the 2 s (the login and the names
    # were done before the read began, by the run's catalog step)
    fault(world.sims.c2_url, latency_s=2.1)
    printed = refused_and_nothing_moved(world, "c2", impatient)
    assert ("C2 ITSM did not finish listing its CIs within max_read_time (2s) for category Printers "
            f"({CIS}: the read was abandoned after ") in printed, printed
    assert f"before page 2, with 500 of the 600 announced received); {REFUSED}" in printed, printed
    listed = requests.get(f"{world.sims.c2_url}/_sim/stats", timeout=5).json()["by_route"]
    assert listed["GET /api/v1/cmdbs/{cmdb_id}/cis"] == 1, "pages were read past max_read_time"


def test_a_ci_that_joins_an_incremental_listing_behind_the_cursor_is_no_fault_and_comes_once() -> None:
    """The one repeat forgiven: a CI modified during an incremental read joins the filtered list
    behind the cursor, so every later CI moves one place and the next page begins with the CI
    that ended the page before, while `total_count` grows by one. The read succeeds, hands each
    CI on once, and lacks only the joined CI, which the next read lists."""
    monitors = category("Monitors").id
    with start_simulators(size=40) as sims, C2Client(sims.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD) as c2:
        everything = [ci for page in c2.iter_ci_pages("cmdb-1", monitors) for ci in page]
        since = sorted(ci["modified_at"] for ci in everything)[len(everything) // 2]
        recent = sorted(ci["id"] for ci in everything if ci["modified_at"] >= since)
        pages = c2.iter_ci_pages("cmdb-1", monitors, modified_since=datetime.fromisoformat(since), page_size=5)
        first = next(pages)
        old = next(ci for ci in everything if ci["modified_at"] < since and ci["id"] < first[-1]["id"])
        c2.update_ci(old["id"], old["version"], name=old["name"])  # now modified after `since`
        ids = [ci["id"] for ci in first] + [ci["id"] for page in pages for ci in page]
    assert len(recent) > 10, "the incremental list must span pages"
    assert sorted(ids) == recent, "a CI was handed on twice, or one listed before the read began is missing"
