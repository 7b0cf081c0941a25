"""The C2 ITSM and Hector clients over real HTTP, against the bundled simulators on loopback.

Every endpoint of both contracts, pagination, the transient faults (429 with Retry-After, 503,
dropped connections, timeouts, refused connections), token expiry in the middle of a
pagination, and the typed errors of every refusal. No secret may show in an error, a repr or
a log line, even with urllib3 logging at DEBUG.
"""

import logging
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from hector_sync.c2 import C2Category, C2Client, C2Cmdb, C2Field
from hector_sync.config import C2Settings, HectorSettings
from hector_sync.demo import (
    DEMO_C2_PASSWORD, DEMO_C2_READONLY_PASSWORD, DEMO_C2_READONLY_USERNAME, DEMO_C2_USERNAME,
    DEMO_HECTOR_API_KEY,
)
from hector_sync.errors import (
    ApiError, BadRequest, CredentialsRejected, Duplicate, FieldProblem, InvalidData, NotFound, NotUtf8,
    PermissionMissing, Unavailable, UnexpectedAnswer, VersionConflict,
)
from hector_sync.hector import HectorAttribute, HectorCategory, HectorClient, HectorStockroom
from hector_sync.simulators.serve import RunningSimulators
from hector_sync.transport import RetryPolicy
from hector_sync_tests.conftest import SIMULATOR_SIZE

# Small waits keep the file fast; Retry-After up to 5 s is still honoured in full.
FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_max=0.05, retry_after_max=5,
                   connect_timeout=2, read_timeout=5, breaker_s=0)  # breaker: its own test below
WRONG_PASSWORD = "not-the-c2-password-4711"
WRONG_KEY = "not-the-hector-key-0815"
SECRETS = (DEMO_C2_PASSWORD, DEMO_C2_READONLY_PASSWORD, DEMO_HECTOR_API_KEY, WRONG_PASSWORD,
           WRONG_KEY)

PRINTERS, MONITORS, SERVERS = "cat-7", "cat-9", "cat-11"
HECTOR_PRINTERS, HECTOR_LAPTOPS = 12, 13
SEEDED_PRINTER_MODEL = 40  # HP LaserJet M404 "Mono laser printer" in the simulator's seed


def set_faults(url: str, **switches: Any) -> None:
    requests.put(f"{url}/_sim/faults", json=switches, timeout=5).raise_for_status()


def sim_stats(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/_sim/stats", timeout=5).json()


@pytest.fixture(autouse=True)
def calm(simulators: RunningSimulators) -> Iterator[None]:
    """Each test starts with no faults and zeroed simulator statistics (each client, its own
    breaker), and leaves no faults."""
    for url in (simulators.c2_url, simulators.hector_url):
        set_faults(url)
        requests.post(f"{url}/_sim/stats/reset", timeout=5).raise_for_status()
    yield
    for url in (simulators.c2_url, simulators.hector_url):
        set_faults(url)


@pytest.fixture
def c2(simulators: RunningSimulators) -> Iterator[C2Client]:
    with C2Client(simulators.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST) as client:
        yield client


@pytest.fixture
def hector(simulators: RunningSimulators) -> Iterator[HectorClient]:
    with HectorClient(simulators.hector_url, DEMO_HECTOR_API_KEY, retry=FAST) as client:
        yield client


def field_ids(c2: C2Client, category_id: str) -> dict[str, str]:
    return {f.name: f.id for f in c2.list_fields("cmdb-1", category_id)}


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- C2 ITSM: every endpoint ---------------------------------------------------------------


def test_c2_discovery(c2: C2Client) -> None:
    assert c2.list_cmdbs() == [C2Cmdb(id="cmdb-1", name="Production"), C2Cmdb(id="cmdb-2", name="Lab")]
    categories = c2.list_categories("cmdb-1")
    assert [c.name for c in categories] == ["Printers", "Laptops", "Monitors", "Phones", "Servers"]
    assert all(isinstance(c, C2Category) for c in categories)
    fields = c2.list_fields("cmdb-1", PRINTERS)
    assert all(isinstance(f, C2Field) for f in fields)
    assert {f.name: f.type for f in fields}["PurchaseDate"] == "date"
    assert {f.type for f in fields} == {"text", "number", "date", "choice", "user"}
    with pytest.raises(NotFound):
        c2.list_categories("cmdb-404")
    # one login, then four reads
    assert c2.stats.as_metadata() == {"calls": 5, "calls_GET": 4, "calls_POST": 1, "retries": 0}


def test_c2_pages_follow_next_page(c2: C2Client, simulators: RunningSimulators) -> None:
    pages = list(c2.iter_ci_pages("cmdb-1", MONITORS, page_size=50))
    assert [len(page) for page in pages] == [50, 50, SIMULATOR_SIZE - 100]
    ids = [ci["id"] for page in pages for ci in page]
    assert ids == sorted(set(ids))
    assert all(ci["category_id"] == MONITORS and isinstance(ci["fields"], dict) for ci in pages[0])
    assert sim_stats(simulators.c2_url)["by_route"]["GET /api/v1/cmdbs/{cmdb_id}/cis"] == 3


def test_c2_pages_are_lazy(c2: C2Client, simulators: RunningSimulators) -> None:
    pages = c2.iter_ci_pages("cmdb-1", MONITORS, page_size=50)
    assert len(next(pages)) == 50
    assert sim_stats(simulators.c2_url)["by_route"]["GET /api/v1/cmdbs/{cmdb_id}/cis"] == 1


def test_c2_modified_since_is_sent_as_utc(c2: C2Client) -> None:
    everything = [ci for page in c2.iter_ci_pages("cmdb-1", MONITORS) for ci in page]
    instants = sorted(ci["modified_at"] for ci in everything)
    middle = instants[len(instants) // 2]
    expected = sorted(ci["id"] for ci in everything if ci["modified_at"] >= middle)
    since = datetime.fromisoformat(middle).astimezone(timezone(timedelta(hours=-5)))
    found = [ci["id"] for page in c2.iter_ci_pages("cmdb-1", MONITORS, modified_since=since) for ci in page]
    assert found == expected and 0 < len(found) < len(everything)
    with pytest.raises(ValueError, match="timezone"):
        next(c2.iter_ci_pages("cmdb-1", MONITORS, modified_since=datetime(2026, 1, 1)))


def test_c2_ci_lifecycle(c2: C2Client) -> None:
    ids = field_ids(c2, SERVERS)
    created = c2.create_ci("cmdb-1", SERVERS, "SRV-TEST-1", {ids["Manufacturer"]: "Dell", ids["Cost"]: 9800.5})
    assert created["name"] == "SRV-TEST-1" and created["version"] == 1
    assert c2.get_ci(created["id"]) == created

    updated = c2.update_ci(created["id"], 1, fields={ids["Manufacturer"]: None, ids["Model"]: "R650"})
    assert updated["version"] == 2
    assert updated["fields"] == {ids["Cost"]: 9800.5, ids["Model"]: "R650"}
    retired = c2.update_ci(created["id"], 2, name="SRV-TEST-1b", status="retired")
    assert (retired["name"], retired["status"], retired["version"]) == ("SRV-TEST-1b", "retired", 3)

    with pytest.raises(VersionConflict) as conflict:
        c2.update_ci(created["id"], 2, status="active")
    assert conflict.value.code == "version_conflict"
    assert str(conflict.value).startswith(
        f"C2 ITSM refused an update because the record changed since it was read (PATCH /api/v1/cis/{created['id']}, 409)"
    )
    with pytest.raises(InvalidData) as invalid:
        c2.update_ci(created["id"], 3, fields={"f-999": "x", ids["PurchaseDate"]: "31/12/2024"})
    assert {d.field for d in invalid.value.details} == {"f-999", ids["PurchaseDate"]}
    assert str(invalid.value).startswith(f"C2 ITSM refused invalid data (PATCH /api/v1/cis/{created['id']}, 422): ")

    assert c2.get_ci("ci-59999999") is None
    with pytest.raises(NotFound) as missing:
        c2.update_ci("ci-59999999", 1, status="retired")
    assert str(missing.value) == "C2 ITSM has no such record (PATCH /api/v1/cis/ci-59999999, 404): no CI ci-59999999"
    with pytest.raises(ValueError, match="nothing to change"):
        c2.update_ci(created["id"], 3)


def test_c2_page_size_is_bounded(c2: C2Client) -> None:
    with pytest.raises(ValueError, match="between 1 and 500"):
        next(c2.iter_ci_pages("cmdb-1", PRINTERS, page_size=501))


# --- C2 ITSM: authentication ----------------------------------------------------------------


def test_c2_wrong_password(simulators: RunningSimulators) -> None:
    client = C2Client(simulators.c2_url, DEMO_C2_USERNAME, WRONG_PASSWORD, retry=FAST)
    with pytest.raises(CredentialsRejected) as rejected:
        client.list_cmdbs()
    assert str(rejected.value) == (
        "C2 ITSM rejected the credentials of svc-hector (POST /api/v1/auth/login, 401): "
        "check the username and password in the configuration"
    )
    assert (rejected.value.status, rejected.value.account) == (401, DEMO_C2_USERNAME)
    assert sim_stats(simulators.c2_url)["calls"] == 1  # a 401 is an answer, never retried


def test_c2_token_expiry_in_the_middle_of_a_pagination(c2: C2Client, simulators: RunningSimulators) -> None:
    pages = c2.iter_ci_pages("cmdb-1", MONITORS, page_size=50)
    seen = [ci["id"] for ci in next(pages)] + [ci["id"] for ci in next(pages)]
    requests.post(f"{simulators.c2_url}/_sim/expire-tokens", timeout=5).raise_for_status()
    seen += [ci["id"] for page in pages for ci in page]
    assert len(seen) == len(set(seen)) == SIMULATOR_SIZE
    assert c2.stats.calls["POST"] == 2  # the first login and one more
    assert sim_stats(simulators.c2_url)["by_status"]["401"] == 1


def test_c2_token_that_keeps_expiring_is_renewed_each_time(c2: C2Client, simulators: RunningSimulators) -> None:
    set_faults(simulators.c2_url, token_expire_every=1)
    for _ in range(3):
        assert len(c2.list_cmdbs()) == 2
    # login, call, then twice: 401, login, call
    assert dict(c2.stats.calls) == {"POST": 3, "GET": 5}


def test_c2_read_only_account_cannot_write(simulators: RunningSimulators) -> None:
    client = C2Client(simulators.c2_url, DEMO_C2_READONLY_USERNAME, DEMO_C2_READONLY_PASSWORD, retry=FAST)
    ci = next(client.iter_ci_pages("cmdb-1", PRINTERS, page_size=1))[0]
    with pytest.raises(PermissionMissing) as refused:
        client.update_ci(ci["id"], ci["version"], status="retired")
    assert str(refused.value) == (
        f"C2 ITSM refused a write: the account svc-readonly lacks write permission (PATCH /api/v1/cis/{ci['id']}, 403): "
        "give it write permission in C2 ITSM, or use an account that has it"
    )
    with pytest.raises(PermissionMissing, match=r"refused a write: .* \(POST /api/v1/cmdbs/cmdb-1/cis, 403\)"):
        client.create_ci("cmdb-1", PRINTERS, "PRN-NEW", {})


# --- Hector: every endpoint ------------------------------------------------------------------


def test_hector_reference_lists(hector: HectorClient) -> None:
    assert [s.name for s in hector.list_stockrooms()] == ["Main warehouse", "Montréal – Entrepôt B", "東京 倉庫"]
    assert all(isinstance(s, HectorStockroom) for s in hector.list_stockrooms())
    categories = hector.list_categories()
    assert all(isinstance(c, HectorCategory) for c in categories)
    assert {c.name: c.type for c in categories}["Cables"] == "lot"
    attributes = {a.name: a for a in hector.list_attributes()}
    assert attributes["Serial number"] == HectorAttribute(id=5, name="Serial number", scope="asset", type="text")
    assert attributes["Form factor"].scope == "subcategory"


def test_hector_pages_by_limit_and_offset(hector: HectorClient, simulators: RunningSimulators) -> None:
    pages = list(hector.iter_asset_pages(category_id=HECTOR_LAPTOPS, page_size=2))
    assert [len(page) for page in pages] == [2, 2, 1]
    ids = [a["id"] for page in pages for a in page]
    assert ids == sorted(set(ids))
    assert sim_stats(simulators.hector_url)["by_route"]["GET /api/v1/assets"] == 3  # no empty 4th page
    assert list(hector.iter_asset_pages(category_id=HECTOR_PRINTERS, subcategory_id=999)) == []
    with pytest.raises(ValueError, match="between 1 and 1000"):
        next(hector.iter_asset_pages(page_size=0))


def test_hector_subcategory_lifecycle(hector: HectorClient) -> None:
    body = {"category_id": HECTOR_PRINTERS, "maker": "Brother", "model": "HL-L2350DW",
            "description": "Compact mono laser printer", "price": 159.0,
            "attributes": {"Form factor": "Desktop"}}
    created = hector.create_subcategory(body)
    assert created["version"] == 1 and created["maker"] == "Brother"
    listed = [s for page in hector.iter_subcategory_pages(HECTOR_PRINTERS, page_size=1) for s in page]
    assert created["id"] in [s["id"] for s in listed]
    recent = datetime.now(UTC) - timedelta(seconds=5)
    assert [s["id"] for page in hector.iter_subcategory_pages(HECTOR_PRINTERS, updated_since=recent)
            for s in page] == [created["id"]]

    updated = hector.update_subcategory(created["id"], 1, {"price": 149.0})
    assert (updated["price"], updated["version"]) == (149.0, 2)
    with pytest.raises(VersionConflict):
        hector.update_subcategory(created["id"], 1, {"price": 139.0})
    with pytest.raises(NotFound):
        hector.update_subcategory(99_999, 1, {"price": 1.0})

    with pytest.raises(Duplicate) as duplicate:
        hector.create_subcategory({**body, "maker": " brother ", "model": "hl-l2350dw"})
    assert duplicate.value.existing_id == created["id"]
    assert str(duplicate.value).startswith(
        f"Hector refused a duplicate of existing record {created['id']} (POST /api/v1/subcategories, 409)"
    )
    with pytest.raises(Duplicate) as seeded:
        hector.create_subcategory({"category_id": HECTOR_PRINTERS, "maker": "HP", "model": "LaserJet M404",
                                   "description": "Mono laser printer"})
    assert seeded.value.existing_id == SEEDED_PRINTER_MODEL

    with pytest.raises(InvalidData) as blank:
        hector.create_subcategory({**body, "maker": "  "})
    assert [d.field for d in blank.value.details] == ["maker"]
    with pytest.raises(InvalidData) as wrong_scope:
        hector.create_subcategory({**body, "model": "HL-L2350DN", "attributes": {"Serial number": "x"}})
    assert [d.field for d in wrong_scope.value.details] == ["attributes.Serial number"]


def test_hector_asset_lifecycle(hector: HectorClient) -> None:
    body = {"subcategory_id": SEEDED_PRINTER_MODEL, "stockroom_id": 1, "title": "PRN-0042",
            "asset_tag": "A-000042", "acquisition_date": "2024-03-01",
            "attributes": {"Serial number": "VNB3K12345"},
            "external_refs": [{"source": "c2", "id": "ci-10000042"}]}
    created = hector.create_asset(body)
    assert (created["category_id"], created["status"], created["version"]) == (HECTOR_PRINTERS, "in_stock", 1)
    assert hector.find_assets_by_external_ref("c2", "ci-10000042") == [created]
    assert hector.find_assets_by_external_ref("c2", "ci-10000043") == []
    recent = datetime.now(UTC) - timedelta(seconds=5)
    assert [a["id"] for page in hector.iter_asset_pages(updated_since=recent) for a in page] == [created["id"]]

    updated = hector.update_asset(created["id"], 1, {"status": "assigned", "assigned_date": "2024-04-02"})
    assert (updated["status"], updated["version"]) == ("assigned", 2)
    with pytest.raises(VersionConflict) as conflict:
        hector.update_asset(created["id"], 1, {"status": "retired"})
    assert str(conflict.value).startswith(
        f"Hector refused an update because the record changed since it was read (PATCH /api/v1/assets/{created['id']}, 409)"
    )

    with pytest.raises(Duplicate) as duplicate:  # a create retried after a lost answer
        hector.create_asset({**body, "asset_tag": None})
    assert (duplicate.value.status, duplicate.value.code, duplicate.value.existing_id) == (409, "duplicate", created["id"])

    with pytest.raises(InvalidData) as invalid:
        hector.create_asset({**body, "asset_tag": "A-000043", "external_refs": [], "acquisition_date": "2024-13-45"})
    assert invalid.value.details == [FieldProblem("acquisition_date", "2024-13-45 is not a calendar date")]
    assert str(invalid.value) == (
        "Hector refused invalid data (POST /api/v1/assets, 422): acquisition_date: "
        "2024-13-45 is not a calendar date"
    )
    with pytest.raises(ValueError, match="nothing to change"):
        hector.update_asset(created["id"], 2, {})


def test_hector_bad_filter_is_a_bad_request(hector: HectorClient, simulators: RunningSimulators) -> None:
    with pytest.raises(BadRequest) as refused:
        list(hector.iter_asset_pages(external_ref="no-colon"))
    assert refused.value.status == 400 and refused.value.call == "GET /api/v1/assets"
    assert sim_stats(simulators.hector_url)["calls"] == 1


# --- Hector: authentication -------------------------------------------------------------------


def test_hector_wrong_key(simulators: RunningSimulators) -> None:
    client = HectorClient(simulators.hector_url, WRONG_KEY, retry=FAST)
    with pytest.raises(CredentialsRejected) as rejected:
        client.list_categories()
    assert str(rejected.value) == (
        "Hector rejected the API key (GET /api/v1/categories, 401): check the API key in the configuration"
    )
    assert sim_stats(simulators.hector_url)["calls"] == 1


def test_from_settings_names_the_variable_of_the_secret(
    simulators: RunningSimulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HECTOR_API_KEY", WRONG_KEY)
    monkeypatch.setenv("C2_PASSWORD", DEMO_C2_PASSWORD)
    hector = HectorClient.from_settings(
        HectorSettings(url=simulators.hector_url, api_key={"env": "HECTOR_API_KEY"}, allow_insecure_http=True),
        retry=FAST,
    )
    with pytest.raises(CredentialsRejected, match=r"^Hector rejected the API key \(GET /api/v1/categories, 401\): "
                                                  r"check the key in HECTOR_API_KEY$"):
        hector.list_categories()
    c2 = C2Client.from_settings(
        C2Settings(url=simulators.c2_url, username=DEMO_C2_USERNAME, password={"env": "C2_PASSWORD"},
                   allow_insecure_http=True),
        retry=FAST,
    )
    assert len(c2.list_cmdbs()) == 2
    monkeypatch.setenv("C2_PASSWORD", WRONG_PASSWORD)
    c2 = C2Client.from_settings(
        C2Settings(url=simulators.c2_url, username=DEMO_C2_USERNAME, password={"env": "C2_PASSWORD"},
                   allow_insecure_http=True),
        retry=FAST,
    )
    with pytest.raises(CredentialsRejected, match="check the password in C2_PASSWORD$"):
        c2.list_cmdbs()


# --- Transient faults ---------------------------------------------------------------------------


def test_429_waits_for_retry_after(hector: HectorClient, simulators: RunningSimulators) -> None:
    # the bucket starts half full: the first call is a 429 with Retry-After: 1, and a second later it passes
    set_faults(simulators.hector_url, rate_limit_per_s=0.5)
    started = time.monotonic()
    assert len(hector.list_stockrooms()) == 3
    assert time.monotonic() - started >= 1.0
    assert hector.stats.retries == 1
    assert sim_stats(simulators.hector_url)["by_status"] == {"429": 1, "200": 1}


def test_retry_after_is_capped(simulators: RunningSimulators) -> None:
    set_faults(simulators.hector_url, fail_429_rate=1.0, retry_after_s=3600)
    policy = FAST.model_copy(update={"total": 2, "retry_after_max": 0.1})
    client = HectorClient(simulators.hector_url, DEMO_HECTOR_API_KEY, retry=policy)
    started = time.monotonic()
    with pytest.raises(Unavailable) as unavailable:
        client.list_stockrooms()
    assert time.monotonic() - started < 2
    assert (unavailable.value.status, unavailable.value.retries) == (429, 2)
    assert str(unavailable.value) == (
        "Hector is unavailable: 429 after 2 retries (GET /api/v1/stockrooms): injected rate limit"
        "; check that Hector is up and reachable from this machine, then rerun"
    )


def hammer(call: Callable[[], object], calls: int, threads: int = 8) -> float:
    """Make `calls` calls from `threads` threads at once, as the writebacks do; the seconds it took.
    Any call's exception fails the test."""
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(call) for _ in range(calls)]:
            future.result()
    return time.monotonic() - started


def test_rate_limit_paces_eight_threads_to_the_server_s_limit(
    simulators: RunningSimulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the client's limit, 8 threads at 50 ms a call would send 160 calls/s and run into
    # 429s as soon as the server's bucket (one second's worth) is spent.
    limit, calls = 40, 120
    set_faults(simulators.hector_url, rate_limit_per_s=limit, latency_s=0.05)
    monkeypatch.setenv("HECTOR_API_KEY", DEMO_HECTOR_API_KEY)
    settings = HectorSettings(url=simulators.hector_url, api_key={"env": "HECTOR_API_KEY"}, allow_insecure_http=True,
                              rate_limit_per_s=limit)
    with HectorClient.from_settings(settings, retry=FAST) as client:
        elapsed = hammer(client.list_stockrooms, calls)
    statuses = sim_stats(simulators.hector_url)["by_status"]
    rate, rejected = calls / elapsed, statuses.get("429", 0) / sum(statuses.values())
    assert statuses.get("200") == calls, statuses  # none lost
    assert rejected <= 0.01, f"{rejected:.1%} answered 429"
    assert 0.9 * limit <= rate <= 1.1 * limit, f"{rate:.1f} calls/s against a limit of {limit}"


def test_retry_after_pauses_every_thread_of_the_client(hector: HectorClient, simulators: RunningSimulators) -> None:
    # seed 94 answers the 6th call of 81 with 429 and Retry-After: 1, and no other
    set_faults(simulators.hector_url, fail_429_rate=0.02, retry_after_s=1, latency_s=0.02, seed=94)
    samples: list[tuple[float, int, int]] = []  # (when, calls the server saw, of which 429)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            stats = sim_stats(simulators.hector_url)
            samples.append((time.monotonic(), stats["calls"], stats["by_status"].get("429", 0)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        elapsed = hammer(hector.list_stockrooms, 80)
    finally:
        done.set()
        watcher.join()
    assert sim_stats(simulators.hector_url)["by_status"] == {"200": 80, "429": 1}
    seen = next(when for when, _, rejected in samples if rejected)
    # a few calls already on their way may land just after the 429; then none until it is over
    during = {calls for when, calls, _ in samples if seen + 0.1 <= when <= seen + 0.8}
    assert len(during) == 1, f"calls reached Hector during the Retry-After: {sorted(during)}"
    assert during.pop() < 40, "most calls should have been held back"
    assert elapsed >= 1.0


def test_from_settings_passes_the_rate_limit(simulators: RunningSimulators, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C2_PASSWORD", DEMO_C2_PASSWORD)
    settings = C2Settings(url=simulators.c2_url, username=DEMO_C2_USERNAME, password={"env": "C2_PASSWORD"},
                          allow_insecure_http=True)
    assert C2Client.from_settings(settings).throttle.rate_per_s is None
    limited = settings.model_copy(update={"rate_limit_per_s": 12.5})
    assert C2Client.from_settings(limited).throttle.rate_per_s == 12.5


def test_a_host_that_stayed_down_is_not_called_again_for_a_while(simulators: RunningSimulators) -> None:
    set_faults(simulators.hector_url, down=True)
    client = HectorClient(simulators.hector_url, DEMO_HECTOR_API_KEY, retry=FAST.model_copy(update={"breaker_s": 60}))
    with pytest.raises(Unavailable, match="503 after 3 retries"):
        client.list_categories()
    with pytest.raises(Unavailable) as shortcut:
        client.list_stockrooms()
    assert "stayed unavailable 0 s ago (GET /api/v1/categories: 503), so it is not called again for 60 s" \
        in str(shortcut.value)
    assert sim_stats(simulators.hector_url)["by_status"] == {"503": FAST.total + 1}, "the down host was called again"
    client.breaker.reset()
    set_faults(simulators.hector_url)
    assert client.list_stockrooms(), "the breaker outlived its reset"


def test_503_is_retried_for_every_method_then_given_up(c2: C2Client, simulators: RunningSimulators) -> None:
    set_faults(simulators.c2_url, down=True)
    started = time.monotonic()
    with pytest.raises(Unavailable) as unavailable:
        c2.list_cmdbs()  # the login is a POST: a 503 means it was not processed, so it is retried too
    assert time.monotonic() - started < 2
    assert str(unavailable.value) == (
        "C2 ITSM is unavailable: 503 after 3 retries (POST /api/v1/auth/login): the simulator is switched down"
        "; check that C2 ITSM is up and reachable from this machine, then rerun"
    )
    assert sim_stats(simulators.c2_url)["by_status"] == {"503": FAST.total + 1}
    assert c2.stats.as_metadata() == {"calls": 1, "calls_POST": 1, "retries": FAST.total}
    set_faults(simulators.c2_url)
    assert len(c2.list_cmdbs()) == 2  # and the client recovers with the server


def test_dropped_connection_on_get_is_retried(hector: HectorClient, simulators: RunningSimulators) -> None:
    set_faults(simulators.hector_url, drop_connection_rate=0.5, seed=4)  # dice: drop, drop, pass
    assert len(hector.list_categories()) == 7
    dropped = sim_stats(simulators.hector_url)["by_status"]["dropped"]
    assert dropped >= 1 and hector.stats.retries == dropped


def test_dropped_connection_on_patch_is_replayed(hector: HectorClient, simulators: RunningSimulators) -> None:
    asset = next(hector.iter_asset_pages(category_id=HECTOR_LAPTOPS, page_size=1))[0]
    set_faults(simulators.hector_url, drop_connection_rate=0.5, seed=4)
    updated = hector.update_asset(asset["id"], asset["version"], {"note": "checked"})
    assert updated["version"] == asset["version"] + 1  # If-Match makes the replay safe
    assert sim_stats(simulators.hector_url)["by_status"]["dropped"] == hector.stats.retries >= 1


def test_dropped_connection_on_post_is_not_replayed(hector: HectorClient, simulators: RunningSimulators) -> None:
    set_faults(simulators.hector_url, drop_connection_rate=1.0)
    with pytest.raises(Unavailable) as unavailable:
        hector.create_asset({"subcategory_id": SEEDED_PRINTER_MODEL, "stockroom_id": 1, "title": "PRN-X"})
    host = simulators.hector_url.removeprefix("http://")
    assert str(unavailable.value) == (
        f"Hector is unavailable: {host} dropped the connection; the request may have been processed "
        "(POST /api/v1/assets); check that Hector is up and reachable from this machine, then rerun"
    )
    assert sim_stats(simulators.hector_url)["calls"] == 1


def test_c2_pages_survive_bodies_cut_short(c2: C2Client, simulators: RunningSimulators) -> None:
    calm = [ci for page in c2.iter_ci_pages("cmdb-1", MONITORS, page_size=10) for ci in page]
    set_faults(simulators.c2_url, cut_body_rate=0.3, seed=1)
    cut = [ci for page in c2.iter_ci_pages("cmdb-1", MONITORS, page_size=10) for ci in page]
    assert cut == calm and len(cut) == SIMULATOR_SIZE
    assert sim_stats(simulators.c2_url)["by_status"]["cut"] == c2.stats.retries > 0


def test_hector_pages_survive_bodies_cut_short(hector: HectorClient, simulators: RunningSimulators) -> None:
    calm = [a for page in hector.iter_asset_pages(category_id=HECTOR_LAPTOPS, page_size=1) for a in page]
    set_faults(simulators.hector_url, cut_body_rate=0.3, seed=4)  # dice: cut, cut, pass, ...
    cut = [a for page in hector.iter_asset_pages(category_id=HECTOR_LAPTOPS, page_size=1) for a in page]
    assert cut == calm and len(cut) == 5
    assert sim_stats(simulators.hector_url)["by_status"]["cut"] == hector.stats.retries >= 2


def test_cut_bodies_and_503s_share_one_retry_budget(hector: HectorClient, simulators: RunningSimulators) -> None:
    set_faults(simulators.hector_url, fail_503_rate=0.5, cut_body_rate=0.5, seed=1)  # cut, 503, 503, cut
    with pytest.raises(Unavailable) as unavailable:
        hector.list_stockrooms()
    host = simulators.hector_url.removeprefix("http://")
    assert str(unavailable.value) == (
        f"Hector is unavailable: {host} dropped the connection after 3 retries (GET /api/v1/stockrooms)"
        "; check that Hector is up and reachable from this machine, then rerun"
    )
    assert sim_stats(simulators.hector_url)["by_status"] == {"cut": 2, "503": 2}
    assert hector.stats.as_metadata() == {"calls": 1, "calls_GET": 1, "retries": FAST.total}


def test_cut_answer_to_a_post_is_not_replayed(c2: C2Client, simulators: RunningSimulators) -> None:
    assert len(c2.list_cmdbs()) == 2  # logged in before the fault: the login is a POST too
    set_faults(simulators.c2_url, cut_body_rate=1.0)
    with pytest.raises(Unavailable) as unavailable:
        c2.create_ci("cmdb-1", SERVERS, "SRV-CUT-1", {})
    host = simulators.c2_url.removeprefix("http://")
    assert str(unavailable.value) == (
        f"C2 ITSM is unavailable: {host} dropped the connection; the request may have been processed "
        "(POST /api/v1/cmdbs/cmdb-1/cis); check that C2 ITSM is up and reachable from this machine, then rerun"
    )
    assert sim_stats(simulators.c2_url)["by_route"]["POST /api/v1/cmdbs/{cmdb_id}/cis"] == 1
    assert c2.stats.retries == 0
    set_faults(simulators.c2_url)
    names = [ci["name"] for page in c2.iter_ci_pages("cmdb-1", SERVERS) for ci in page]
    assert names.count("SRV-CUT-1") == 1  # it was processed, once


def test_cut_answer_to_a_patch_is_replayed_safely(c2: C2Client, simulators: RunningSimulators) -> None:
    ci = next(c2.iter_ci_pages("cmdb-1", SERVERS, page_size=1))[0]
    set_faults(simulators.c2_url, cut_body_rate=0.5, seed=9)  # dice: cut, pass
    # the cut PATCH was applied, so If-Match refuses its replay rather than applying it twice
    with pytest.raises(VersionConflict):
        c2.update_ci(ci["id"], ci["version"], status="retired")
    stats = sim_stats(simulators.c2_url)
    assert stats["by_route"]["PATCH /api/v1/cis/{ci}"] == 2 and stats["by_status"]["cut"] == 1
    assert c2.stats.retries == 1
    set_faults(simulators.c2_url)
    after = c2.get_ci(ci["id"])
    assert after is not None and (after["status"], after["version"]) == ("retired", ci["version"] + 1)


def test_read_timeout_is_retried_then_given_up(simulators: RunningSimulators) -> None:
    set_faults(simulators.hector_url, latency_s=0.3)
    policy = FAST.model_copy(update={"total": 1, "read_timeout": 0.1})
    client = HectorClient(simulators.hector_url, DEMO_HECTOR_API_KEY, retry=policy)
    with pytest.raises(Unavailable) as unavailable:
        client.list_stockrooms()
    host = simulators.hector_url.removeprefix("http://")
    assert str(unavailable.value) == (
        f"Hector is unavailable: {host} gave no answer within 0.1 s after 1 retry (GET /api/v1/stockrooms)"
        "; check that Hector is up and reachable from this machine, then rerun"
    )


def test_connection_refused() -> None:
    port = closed_port()
    client = C2Client(f"http://127.0.0.1:{port}", DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)
    with pytest.raises(Unavailable) as unavailable:
        client.list_cmdbs()
    assert str(unavailable.value) == (
        f"C2 ITSM is unavailable: 127.0.0.1:{port} refused the connection after 3 retries (POST /api/v1/auth/login)"
        "; check that C2 ITSM is up and reachable from this machine, then rerun"
    )
    assert unavailable.value.status is None and client.stats.retries == FAST.total


# --- A server that breaks the contract (the simulators never do) -------------------------------


class ContractBreaker(BaseHTTPRequestHandler):
    """Answers every call from `ANSWERS` ("METHOD /path?query" -> status, body, content type)."""

    ANSWERS: dict[str, tuple[int, str, str]] = {
        "POST /api/v1/auth/login": (200, '{"token": "t", "expires_in": 60, "scope": "all"}', "application/json"),
        "GET /api/v1/cmdbs": (200, '{"items": [{"id": "cmdb-1", "name": "Production", "color": "red"}], '
                                   '"more": true}', "application/json"),
        "GET /api/v1/stockrooms?limit=1000&offset=0": (200, '{"total": 1, "rows": [{"id": 1}]}', "application/json"),
        "GET /api/v1/categories?limit=1000&offset=0": (200, "<html>maintenance</html>", "text/html"),
        "GET /api/v1/attributes?limit=1000&offset=0": (502, "<html>Bad gateway</html>", "text/html"),
        "GET /api/v1/cmdbs/cmdb-1/cis?category_id=cat-7&page_size=500&page=1":
            (200, '{"items": [], "next_page": 1}', "application/json"),
        # a lone surrogate, escaped: valid UTF-8 on the wire, yet no text (a valid pair is one emoji)
        "GET /api/v1/cmdbs/cmdb-2/categories":
            (200, '{"items": [{"id": "cat-12", "name": "Lab \\ud83d\\udda8 M\\udcfcller"}]}', "application/json"),
    }

    def answer(self) -> None:
        status, body, content_type = self.ANSWERS[f"{self.command} {self.path}"]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest would show the stub's access log."""


@pytest.fixture(scope="module")
def contract_breaker() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ContractBreaker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unknown_fields_are_ignored(contract_breaker: str) -> None:
    c2 = C2Client(contract_breaker, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)
    assert c2.list_cmdbs() == [C2Cmdb(id="cmdb-1", name="Production")]


def test_what_we_need_is_checked(contract_breaker: str) -> None:
    hector = HectorClient(contract_breaker, DEMO_HECTOR_API_KEY, retry=FAST)
    with pytest.raises(UnexpectedAnswer) as missing:
        hector.list_stockrooms()
    assert str(missing.value) == (
        "Hector gave an answer hector_sync did not expect (GET /api/v1/stockrooms): name: Field required"
    )
    with pytest.raises(UnexpectedAnswer, match=r"\(GET /api/v1/categories, 200\): the body is not JSON$"):
        hector.list_categories()
    with pytest.raises(Unavailable) as proxy:  # an error body that is not ours: the status speaks
        hector.list_attributes()
    assert str(proxy.value) == (
        "Hector is unavailable: 502 after 3 retries (GET /api/v1/attributes): Bad Gateway; check that Hector is up and reachable from this machine, then rerun")
    c2 = C2Client(contract_breaker, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)
    with pytest.raises(UnexpectedAnswer, match="page 1 names page 1 as the next one"):
        list(c2.iter_ci_pages("cmdb-1", PRINTERS))


def test_a_lone_surrogate_escaped_in_json_is_refused_like_bytes_that_are_not_utf8(contract_breaker: str) -> None:
    c2 = C2Client(contract_breaker, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)
    with pytest.raises(NotUtf8) as refused:
        c2.list_categories("cmdb-2")
    assert str(refused.value) == (
        'C2 ITSM answered GET /api/v1/cmdbs/cmdb-2/categories with bytes that are not UTF-8 in item cat-12 '
        '(name "Lab 🖨 M\\xfcller") at name = "Lab 🖨 M\\xfcller": fix that text in C2 ITSM, or the encoding of '
        'whatever serves its API, then rerun')


# --- Errors, construction, secrets ----------------------------------------------------------------


@pytest.mark.parametrize("error", [
    CredentialsRejected(system="C2 ITSM", call="POST /api/v1/auth/login", status=401, account="svc-hector",
                        hint="check the password in C2_PASSWORD"),
    PermissionMissing(system="C2 ITSM", call="PATCH /api/v1/cis/ci-1", status=403, code="forbidden",
                      account="svc-readonly"),
    NotFound(system="Hector", call="PATCH /api/v1/assets/1", status=404, message="no asset 1"),
    VersionConflict(system="Hector", call="PATCH /api/v1/assets/1", status=409, code="version_conflict"),
    Duplicate(system="Hector", call="POST /api/v1/assets", status=409, code="duplicate", existing_id=9001),
    InvalidData(system="Hector", call="POST /api/v1/assets", status=422,
                details=[FieldProblem("acquisition_date", "malformed date")]),
    BadRequest(system="Hector", call="GET /api/v1/assets", status=400, message="external_ref is source:id"),
    Unavailable(system="Hector", call="GET /api/v1/assets", status=503, retries=5),
    UnexpectedAnswer(system="C2 ITSM", call="GET /api/v1/cmdbs", details=[FieldProblem("items", "Field required")]),
], ids=lambda error: type(error).__name__)
def test_errors_pickle(error: ApiError) -> None:
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is type(error)
    assert vars(restored) == vars(error) and str(restored) == str(error) and restored.args == error.args


def test_error_sentences() -> None:
    assert str(InvalidData(system="Hector", call="POST /api/v1/assets", status=422,
                           details=[FieldProblem("acquisition_date", "malformed date")])) == (
        "Hector refused invalid data (POST /api/v1/assets, 422): acquisition_date: malformed date"
    )
    assert str(Unavailable(system="Hector", call="GET /api/v1/assets", status=503, retries=5)) == (
        "Hector is unavailable: 503 after 5 retries (GET /api/v1/assets); check that Hector is up and reachable from this machine, then rerun"
    )
    assert str(PermissionMissing(system="Hector", call="GET /api/v1/assets", status=403)) == (
        "Hector refused a read: the API key lacks read permission (GET /api/v1/assets, 403): "
        "give it read permission in Hector, or use an account that has it"
    )


def test_repr_and_url_checks(c2: C2Client, hector: HectorClient, simulators: RunningSimulators) -> None:
    assert repr(c2) == f"C2Client(url='{simulators.c2_url}', user='svc-hector')"
    assert repr(hector) == f"HectorClient(url='{simulators.hector_url}')"
    with pytest.raises(ValueError, match="must not contain credentials") as in_url:
        C2Client(f"http://svc:{DEMO_C2_PASSWORD}@127.0.0.1:1", DEMO_C2_USERNAME, DEMO_C2_PASSWORD)
    assert DEMO_C2_PASSWORD not in str(in_url.value)
    with pytest.raises(ValueError, match="https://host"):
        HectorClient("hector.example.com", DEMO_HECTOR_API_KEY)


def test_tls_verification_off_is_logged_loudly(simulators: RunningSimulators, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hector_sync.http"):
        for _ in range(2):
            client = HectorClient(simulators.hector_url, DEMO_HECTOR_API_KEY, verify_tls=False, retry=FAST)
            assert len(client.list_stockrooms()) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "TLS certificate verification is OFF" in r.message]
    assert len(warnings) == 2
    assert f"Hector at {simulators.hector_url}" in warnings[0].message


def test_an_api_key_that_cannot_be_a_header_names_its_variable_only(
    simulators: RunningSimulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http.client sends headers as Latin-1: a key outside it would fail deep in the send."""
    key = "hector-key-\u20ac-\u043a\u043b\u044e\u0447-4410"
    monkeypatch.setenv("HECTOR_API_KEY", key)
    settings = HectorSettings(url=simulators.hector_url, api_key={"env": "HECTOR_API_KEY"}, allow_insecure_http=True)
    with pytest.raises(ValueError) as refused:
        HectorClient.from_settings(settings, retry=FAST)
    assert str(refused.value).startswith(
        "the environment variable HECTOR_API_KEY is not a valid HTTP header value"), refused.value
    assert "hector-key" not in str(refused.value) and sim_stats(simulators.hector_url)["by_method"] == {}


def test_plain_http_is_allowed_only_explicitly_and_logged_loudly_once_per_client(
    simulators: RunningSimulators, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http:// url takes allow_insecure_http: true (refused without, see test_config.py); each
    client built on one then says so once, at warning level, however many calls it makes."""
    monkeypatch.setenv("HECTOR_API_KEY", DEMO_HECTOR_API_KEY)
    monkeypatch.setenv("C2_PASSWORD", DEMO_C2_PASSWORD)
    with pytest.raises(ValueError, match="plain http:// address.*allow_insecure_http: true in section 'hector'"):
        HectorSettings(url=simulators.hector_url, api_key={"env": "HECTOR_API_KEY"})
    c2_settings = C2Settings(url=simulators.c2_url, username=DEMO_C2_USERNAME, password={"env": "C2_PASSWORD"},
                             allow_insecure_http=True)
    hector_settings = HectorSettings(url=simulators.hector_url, api_key={"env": "HECTOR_API_KEY"},
                                     allow_insecure_http=True)
    with caplog.at_level(logging.WARNING, logger="hector_sync.http"):
        with C2Client.from_settings(c2_settings, retry=FAST) as c2, \
                HectorClient.from_settings(hector_settings, retry=FAST) as hector:
            for _ in range(3):
                assert len(c2.list_cmdbs()) == 2 and len(hector.list_stockrooms()) == 3
    plain = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "Plain HTTP" in r.getMessage()]
    assert plain == [
        f"Plain HTTP (no TLS) for C2 ITSM at {simulators.c2_url}: the credentials cross the network unencrypted, "
        "readable by anyone on the path (allow_insecure_http: true). Use this only with a test server.",
        f"Plain HTTP (no TLS) for Hector at {simulators.hector_url}: the credentials cross the network unencrypted, "
        "readable by anyone on the path (allow_insecure_http: true). Use this only with a test server.",
    ]


def test_no_secret_in_errors_reprs_or_debug_logs(
    simulators: RunningSimulators, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # root: urllib3, requests and ours
    texts: list[str] = []

    def attempt(call: Any) -> None:
        try:
            call()
        except Exception as error:  # every failure and its whole causal chain
            cause: BaseException | None = error
            while cause is not None:
                texts.extend((str(cause), repr(cause)))
                cause = cause.__cause__ or cause.__context__

    c2 = C2Client(simulators.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=FAST)
    readonly = C2Client(simulators.c2_url, DEMO_C2_READONLY_USERNAME, DEMO_C2_READONLY_PASSWORD, retry=FAST)
    hector = HectorClient(simulators.hector_url, DEMO_HECTOR_API_KEY, retry=FAST, verify_tls=False)
    ci = next(c2.iter_ci_pages("cmdb-1", PRINTERS, page_size=10))[0]
    tokens = {c2._token}
    requests.post(f"{simulators.c2_url}/_sim/expire-tokens", timeout=5)
    attempt(lambda: c2.get_ci(ci["id"]))
    tokens.add(c2._token)
    attempt(lambda: c2.update_ci(ci["id"], ci["version"] + 7, status="retired"))
    # a server that echoes what it was sent may echo a secret: it is scrubbed from the error
    attempt(lambda: c2.update_ci(ci["id"], ci["version"], fields={DEMO_C2_PASSWORD: "x"}))
    assert any("***: unknown field" in text for text in texts)
    attempt(lambda: readonly.update_ci(ci["id"], ci["version"], status="retired"))
    tokens.add(readonly._token)
    attempt(lambda: C2Client(simulators.c2_url, DEMO_C2_USERNAME, WRONG_PASSWORD, retry=FAST).list_cmdbs())
    attempt(lambda: HectorClient(simulators.hector_url, WRONG_KEY, retry=FAST).list_categories())
    attempt(lambda: hector.create_asset({"subcategory_id": 40, "stockroom_id": 1, "title": "x", "return_date": "?"}))
    set_faults(simulators.hector_url, down=True)
    attempt(hector.list_attributes)
    set_faults(simulators.c2_url, drop_connection_rate=1.0)
    attempt(lambda: c2.create_ci("cmdb-1", PRINTERS, "PRN-X", {}))
    attempt(lambda: C2Client(f"http://127.0.0.1:{closed_port()}", DEMO_C2_USERNAME, DEMO_C2_PASSWORD,
                             retry=FAST).list_cmdbs())

    texts += [caplog.text, repr(c2), repr(readonly), repr(hector), repr(c2.stats), repr(FAST)]
    assert len(texts) > 20 and "urllib3.connectionpool" in caplog.text
    assert None not in tokens and len(tokens) == 3
    for secret in (*SECRETS, *tokens):
        assert not [text for text in texts if secret in text], "a secret leaked"
