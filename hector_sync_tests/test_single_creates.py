"""A create is sent once: a create whose outcome is unknown (a 502 or 504 from a gateway, a lost
answer) never becomes two items. C2 ITSM has no duplicate check, so its CIs are found by their
values after such an answer, or held until a later read settles them; Hector refuses a second
asset with the same external ref, so its creates may be retried.

Every sync runs through Dagster against both simulators over HTTP, with the real DuckDB file;
the simulators' `store_then_fail_*` switches store the item and then answer a 502/504 or drop
the connection. What the systems hold is counted at the simulators and read back over the APIs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.demo import DEMO_C2_PASSWORD, DEMO_C2_USERNAME
from hector_sync.errors import Unavailable
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync.transport import RetryPolicy
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import (
    PHONES, c2_cis, hector_state, naive_valid, refs, reset, seed_phones, sync, ten_minutes_pass, writes,
)

PHONE_COUNT = 30
CI_CREATE = "POST /api/v1/cmdbs/{cmdb_id}/cis"


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """C2 ITSM with no phones (Hector is their source) and 30 printers (C2 ITSM is theirs)."""
    with start_simulators(size=20, sizes={"Phones": 0, "Printers": 30}) as running:
        yield running


def configure(write_config: WriteConfig, sims: RunningSimulators, key: str) -> SyncConfig:
    """The phones of `systems.PHONES` (Hector → C2 ITSM), or the demo's printers (C2 ITSM → Hector)."""

    def edit(data: dict) -> None:
        data["categories"] = [PHONES] if key == "phones" else [c for c in data["categories"] if c["key"] == key]

    return load_config(write_config(sims.c2_url, sims.hector_url, edit=edit))


@pytest.fixture
def phones(write_config: WriteConfig, sims: RunningSimulators) -> SyncConfig:
    """Phones only, 30 of them seeded in Hector, none in C2 ITSM yet."""
    config = configure(write_config, sims, "phones")
    seed_phones(config, PHONE_COUNT)
    return config


def set_faults(url: str, **faults: object) -> None:
    requests.put(f"{url}/_sim/faults", json=faults, timeout=5).raise_for_status()


def statuses(url: str) -> Counter[str]:
    return Counter(requests.get(f"{url}/_sim/stats", timeout=5).json()["by_status"])


def ci_posts(url: str) -> int:
    return writes(url).get(CI_CREATE, 0)


def creates(config: SyncConfig) -> list[tuple[str, str, str]]:
    """(item, outcome, message) of every create_ci of the category, per run, oldest run first."""
    return Store(config.storage.duckdb_path).query(
        "SELECT item, outcome, any_value(message) FROM change_history WHERE action = 'create_ci' "
        "GROUP BY run_id, item, outcome ORDER BY min(recorded_at), item"
    ).rows()


def last_run(config: SyncConfig) -> dict[str, tuple[str, str | None]]:
    """item → (outcome, message) of what the latest run did to each asset toward C2 ITSM."""
    rows = Store(config.storage.duckdb_path).query(
        "SELECT item, outcome, any_value(message) FROM change_history WHERE direction = 'hector_to_c2' AND "
        "run_id = (SELECT run_id FROM change_history ORDER BY recorded_at DESC LIMIT 1) GROUP BY item, outcome"
    ).rows()
    return {item: (outcome, message) for item, outcome, message in rows}


def journalled(config: SyncConfig) -> int:
    return int(Store(config.storage.duckdb_path).query("SELECT count(*) FROM pending_create").item())


def assert_one_ci_per_phone(config: SyncConfig, seeded: list[dict]) -> None:
    """C2 ITSM holds exactly one CI per phone, by name and by count, and each asset names its own."""
    cis = c2_cis(config, "Phones")
    assert len(cis) == len(seeded), f"{len(cis)} CIs for {len(seeded)} phones"
    assert Counter(ci["name"] for ci in cis) == Counter(a["title"] for a in seeded), "a phone has no CI, or two"
    names = {ci["id"]: ci["name"] for ci in cis}
    _, assets, _ = hector_state(config, "Phones")
    assert sorted(names[ref] for a in assets for ref in refs(a)) == sorted(a["title"] for a in assets), \
        "an asset does not name exactly its own CI"


def test_a_c2_create_is_never_resent_after_a_5xx_or_a_lost_answer_but_is_after_a_429(sims: RunningSimulators) -> None:
    quick = RetryPolicy(total=3, backoff_factor=0.01, backoff_max=0.05, retry_after_max=5, breaker_s=0)
    with C2Client(sims.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD, retry=quick) as c2:
        phones = next(c.id for c in c2.list_categories("cmdb-1") if c.name == "Phones")
        cases = {  # fault → (status of the error, CIs it stored)
            "503": ({"fail_503_rate": 1.0}, 503, 0),
            "502 after storing": ({"store_then_fail_rate": 1.0, "store_then_fail_with": [502]}, 502, 1),
            "504 after storing": ({"store_then_fail_rate": 1.0, "store_then_fail_with": [504]}, 504, 1),
            "lost after storing": ({"store_then_fail_rate": 1.0, "store_then_fail_with": ["drop"]}, None, 1),
            "429": ({"fail_429_rate": 1.0, "retry_after_s": 0}, 429, 0),
        }
        for name, (faults, status, stored) in cases.items():
            reset(sims.c2_url)
            set_faults(sims.c2_url, **faults)
            with pytest.raises(Unavailable) as unknown:
                c2.create_ci("cmdb-1", phones, name, {})
            sent = ci_posts(sims.c2_url)
            set_faults(sims.c2_url)
            assert unknown.value.status == status, name
            # a 429 says "not processed": retried, 3 times here; anything else is sent once
            assert sent == (1 + quick.total if status == 429 else 1), f"{name}: sent {sent} times"
            listed = [ci for page in c2.iter_ci_pages("cmdb-1", phones) for ci in page if ci["name"] == name]
            assert len(listed) == stored, name


def test_c2_creates_stored_then_answered_502_or_504_are_found_by_their_values_not_sent_twice(
    phones: SyncConfig, sims: RunningSimulators
) -> None:
    seeded = hector_state(phones, "Phones")[1]
    set_faults(sims.c2_url, store_then_fail_rate=0.4, store_then_fail_with=[502, 504], seed=3)
    sync(phones, "phones")
    gateway = statuses(sims.c2_url)
    set_faults(sims.c2_url)

    assert gateway["502"] + gateway["504"] >= 3, gateway
    assert ci_posts(sims.c2_url) == PHONE_COUNT, "a create was sent twice"
    assert_one_ci_per_phone(phones, seeded)
    outcomes = creates(phones)
    assert {outcome for _, outcome, _ in outcomes} == {"created"} and len(outcomes) == PHONE_COUNT
    found = [message for _, _, message in outcomes if message and "by its name and values" in message]
    assert 3 <= len(found) <= gateway["502"] + gateway["504"], outcomes
    assert all(m.startswith(("C2 ITSM answered its create 502;", "C2 ITSM answered its create 504;")) for m in found)

    reset(sims.c2_url, sims.hector_url)
    sync(phones, "phones")
    assert writes(sims.c2_url) == {} and writes(sims.hector_url) == {}, "the second sync wrote again"
    assert journalled(phones) == 0


def test_c2_creates_answered_before_they_were_stored_are_held_then_linked_by_the_next_sync(
    phones: SyncConfig, sims: RunningSimulators
) -> None:
    # The gateway answers 502/504 at once; C2 ITSM stores the CI two seconds later, after the
    # writeback has looked for it: the create is held, and the next sync's read settles it.
    seeded = hector_state(phones, "Phones")[1]
    set_faults(sims.c2_url, store_then_fail_rate=0.4, store_then_fail_with=[502, 504], store_then_fail_late_s=2.0,
               seed=5)
    sync(phones, "phones")
    first_posts = ci_posts(sims.c2_url)
    time.sleep(2.5)  # the last late stores land
    set_faults(sims.c2_url)

    assert first_posts == PHONE_COUNT, "a create was sent twice"
    held = {item: message for item, (outcome, message) in last_run(phones).items() if outcome == "held"}
    assert len(held) >= 3, last_run(phones)
    for message in held.values():
        assert message and message.startswith(("C2 ITSM answered its create 502, and lists no CI with its name and "
                                               "values since;", "C2 ITSM answered its create 504, and lists no CI"))
        assert "it is not created again until a later read settles it" in message, message
    assert len(c2_cis(phones, "Phones")) == PHONE_COUNT  # every one landed, the held ones late
    assert journalled(phones) == len(held), "a held create lost its journal entry"

    reset(sims.c2_url, sims.hector_url)
    sync(phones, "phones")
    assert ci_posts(sims.c2_url) == 0, "a held create was sent again"
    settled = last_run(phones)
    assert {item: outcome for item, (outcome, _) in settled.items()} == dict.fromkeys(held, "linked"), settled
    assert_one_ci_per_phone(phones, seeded)
    assert journalled(phones) == 0


def test_c2_creates_whose_answer_was_lost_are_found_or_held_and_one_that_never_landed_is_created_once_later(
    phones: SyncConfig, sims: RunningSimulators
) -> None:
    # Lost answers both ways: the connection dropped once C2 ITSM had stored the CI
    # (store_then_fail "drop"), and before it had read the call (drop_connection_rate).
    seeded = hector_state(phones, "Phones")[1]
    set_faults(sims.c2_url, store_then_fail_rate=0.25, store_then_fail_with=["drop"], drop_connection_rate=0.2, seed=11)
    sync(phones, "phones")
    set_faults(sims.c2_url)
    assert ci_posts(sims.c2_url) == PHONE_COUNT, "a create was sent twice"

    first = last_run(phones)
    found = [i for i, (outcome, message) in first.items()
             if outcome == "created" and "by its name and values" in (message or "")]
    held = {i for i, (outcome, _) in first.items() if outcome == "held"}
    assert found and held, first
    assert all(first[i][1].startswith("C2 ITSM gave no answer to its create (") for i in [*found, *held])
    landed = c2_cis(phones, "Phones")
    assert len(landed) == PHONE_COUNT - len(held) and not {ci["name"] for ci in landed} & {
        a["title"] for a in seeded if str(a["id"]) in held}

    # At once: C2 ITSM still lists no CI of them, but too soon to say they never landed.
    reset(sims.c2_url, sims.hector_url)
    sync(phones, "phones")
    assert ci_posts(sims.c2_url) == 0, "a create of unknown outcome was sent again at once"
    again = last_run(phones)
    assert {i for i, (outcome, _) in again.items() if outcome == "held"} == held
    assert all("lists no CI with its name and values yet; it is not created again before" in again[i][1] for i in held)
    assert journalled(phones) == len(held)

    # Ten minutes later (the journal and the history aged in DuckDB), a read that still lists
    # none settles it: never landed. It is created, once.
    ten_minutes_pass(phones)
    reset(sims.c2_url, sims.hector_url)
    sync(phones, "phones")
    assert ci_posts(sims.c2_url) == len(held)
    assert {i: outcome for i, (outcome, _) in last_run(phones).items()} == dict.fromkeys(held, "created")
    assert_one_ci_per_phone(phones, seeded)
    assert journalled(phones) == 0


def test_hector_creates_stored_then_answered_502_or_504_make_one_asset_per_ci(
    write_config: WriteConfig, sims: RunningSimulators
) -> None:
    config = configure(write_config, sims, "printers")
    set_faults(sims.hector_url, store_then_fail_rate=0.4, store_then_fail_with=[502, 504, "drop"], seed=2)
    sync(config, "printers")
    seen = statuses(sims.hector_url)
    posts = writes(sims.hector_url)
    set_faults(sims.hector_url)

    assert seen["502"] + seen["504"] >= 3 and seen["409"] >= 1, seen  # resent, and found as duplicates
    models, assets, _ = hector_state(config, "Printers")
    cis = {ci["id"]: ci for ci in c2_cis(config, "Printers") if naive_valid(ci)}
    assert Counter(r for a in assets for r in refs(a)) == Counter(list(cis)), "not exactly one asset per CI"
    assert posts["POST /api/v1/assets"] > len(assets), "no asset create met the fault"
    triples = Counter((m["maker"], m["model"], m["description"]) for m in models.values())
    assert max(triples.values()) == 1, "a subcategory was made twice"
