"""What the sync holds back is settled by a person: `hector-sync held` lists it with its
candidates, `link` pins the right pair, `unlink` takes a pair back, and the next sync does the
rest, through Dagster against both simulators over HTTP, like any sync.

Two holds: the demo's laptop whose serial number (identify_by) matches two assets entered by
hand (sample_data.AMBIGUOUS_LAPTOP), and a phone's C2 ITSM create held because C2 ITSM answered
502 before storing it, and then lists two CIs with its name and values.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig
from hector_sync.simulators.sample_data import AMBIGUOUS_LAPTOP, ci_id
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.systems import c2_cis, hector_state, refs, reset, seed_phones, sync, writes
from hector_sync_tests.test_plans import cli, latest_metadata, plan_ids
from hector_sync_tests.test_single_creates import ci_posts, configure, journalled, set_faults

ASSET_PATCH = "PATCH /api/v1/assets/{row_id}"
USER = getpass.getuser()


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """Past the identify_by fixtures of the laptops; no phones in C2 ITSM (Hector is their source)."""
    with start_simulators(size=30, sizes={"Phones": 0}) as running:
        yield running


@dataclass(frozen=True)
class Ambiguous:
    """The laptops after their first sync: the CI identify_by could not pair, its candidates."""

    config: SyncConfig
    sims: RunningSimulators
    ci: dict
    assets: list[dict]  # the unlinked assets holding its serial number, by id

    def cli(self, *args: str) -> tuple[int, str, str]:
        done = cli(self.config, *args)
        return done.returncode, done.stdout, done.stderr

    def held(self) -> str:
        status, out, err = self.cli("held", "--category", "laptops")
        assert (status, err) == (0, ""), err
        return out

    def link(self, command: str, asset: dict) -> str:
        status, out, err = self.cli(command, "--category", "laptops", self.ci["id"], str(asset["id"]))
        assert (status, err) == (0, ""), err
        return out

    def asset(self, asset_id: int) -> dict:
        return next(a for a in hector_state(self.config, "Laptops")[1] if a["id"] == asset_id)

    def changes(self, action: str) -> list[tuple]:
        """(outcome, message) of the recorded `action` rows of the CI, oldest first."""
        rows = Store(self.config.storage.duckdb_path).query(
            "SELECT outcome, message, operator FROM change_history WHERE action = ? AND (item = ? OR target_id = ?) "
            "ORDER BY recorded_at", [action, self.ci["id"], self.ci["id"]])
        return rows.rows()


@pytest.fixture
def ambiguous(write_config: WriteConfig, sims: RunningSimulators) -> Ambiguous:
    config = configure(write_config, sims, "laptops")
    sync(config, "laptops")
    ci = next(c for c in c2_cis(config, "Laptops") if c["id"] == ci_id("Laptops", AMBIGUOUS_LAPTOP))
    serial = ci["fields"]["SerialNumber"].strip().lower()
    assets = sorted((a for a in hector_state(config, "Laptops")[1]
                     if (a["attributes"].get("Serial number") or "").strip().lower() == serial), key=lambda a: a["id"])
    assert len(assets) == 2 and not any(refs(a) for a in assets), assets
    return Ambiguous(config, sims, ci, assets)


def lists_the_laptop_and_its_candidates(shown: str, held: Ambiguous) -> None:
    ids = ", ".join(str(a["id"]) for a in held.assets)
    assert shown.startswith("laptops: 1 held back; pin the right pair with: hector-sync link --category laptops"), shown
    assert f"matches several unlinked assets: {ids}" in shown
    for system, item, name, key in [("C2 ITSM CI", held.ci["id"], held.ci["name"], held.ci["fields"]["SerialNumber"]),
                                    *(("Hector asset", a["id"], a["title"], a["attributes"]["Serial number"])
                                      for a in held.assets)]:
        [line] = [line for line in shown.splitlines() if line.startswith("    ") and str(item) in line.split()]
        assert line.split()[:len(system.split())] == system.split() and repr(name) in line and repr(key) in line, line


def test_a_pin_settles_an_ambiguous_identify_by_match(ambiguous: Ambiguous) -> None:
    lists_the_laptop_and_its_candidates(ambiguous.held(), ambiguous)
    table = latest_metadata("hector_change_set", "laptops")
    assert table["held"] == 1
    assert [(r.data["system"], r.data["id"]) for r in table["held_preview"].records] == [  # type: ignore[attr-defined]
        ("C2 ITSM CI", ambiguous.ci["id"]), *(("Hector asset", str(a["id"])) for a in ambiguous.assets)]

    chosen, other = ambiguous.assets
    said = ambiguous.link("link", chosen)
    assert said.startswith(f"laptops: pinned C2 ITSM CI {ambiguous.ci['id']} "), said
    assert f"Hector asset {chosen['id']}" in said
    assert ambiguous.held() == "laptops: nothing held\n"

    reset(ambiguous.sims.c2_url, ambiguous.sims.hector_url)
    sync(ambiguous.config, "laptops")
    assert writes(ambiguous.sims.hector_url) == {ASSET_PATCH: 1} and writes(ambiguous.sims.c2_url) == {}, \
        "exactly the pinned asset was written, nothing created"
    linked = ambiguous.asset(chosen["id"])
    assert refs(linked) == [ambiguous.ci["id"]] and not refs(ambiguous.asset(other["id"]))
    assert (linked["title"], linked["asset_tag"]) == (ambiguous.ci["name"], ambiguous.ci["fields"]["AssetTag"])
    assert ambiguous.changes("link_asset") == [("linked", f"pinned by {USER} with hector-sync link", None)]
    assert ambiguous.changes("link") == [("pinned", "pinned with hector-sync link: the next sync links them", USER)]

    status, story, _ = ambiguous.cli("history", ambiguous.ci["id"])
    pin = next(line for line in story.splitlines() if " link " in line)
    assert status == 0 and f"by {USER}" in pin and "pinned" in pin and f"'c2:{ambiguous.ci['id']}'" in pin, story
    assert ambiguous.held() == "laptops: nothing held\n"
    assert latest_metadata("hector_change_set", "laptops")["held"] == 0


def test_an_unlinked_pin_was_never_written_and_the_items_are_matched_as_new_again(ambiguous: Ambiguous) -> None:
    chosen, _ = ambiguous.assets
    ambiguous.link("link", chosen)
    status, planned, _ = ambiguous.cli("plan", "--category", "laptops")  # it plans the pinned link
    [plan_id] = plan_ids(planned)
    assert status == 0 and "link_asset" in planned, planned
    said = ambiguous.link("unlink", chosen)
    assert said.endswith("no sync wrote it: the next sync matches both as new items\n"), said

    reset(ambiguous.sims.c2_url, ambiguous.sims.hector_url)
    status, out, err = ambiguous.cli("apply", plan_id)  # planned before the unlink: it must not link them
    assert status == 1 and f"is superseded: hector-sync unlink by {USER} wrote to category 'laptops'" in out, out + err
    sync(ambiguous.config, "laptops")
    assert writes(ambiguous.sims.hector_url) == {}, "the withdrawn pin was not written"
    assert not any(refs(a) for a in hector_state(ambiguous.config, "Laptops")[1] if a in ambiguous.assets)
    lists_the_laptop_and_its_candidates(ambiguous.held(), ambiguous)  # held again, as identify_by finds it
    assert [(o, op) for o, _, op in ambiguous.changes("link") + ambiguous.changes("unlink")] == [
        ("pinned", USER), ("unpinned", USER)]
    story = ambiguous.cli("history", ambiguous.ci["id"])[1]
    assert [line.split()[6:8] for line in story.splitlines() if f"by {USER}" in line] == [
        ["link", "pinned"], ["unlink", "unpinned"]], story


def test_unlinking_a_written_pair_removes_the_ref_then_matches_both_as_new(ambiguous: Ambiguous) -> None:
    chosen, _ = ambiguous.assets
    ambiguous.link("link", chosen)
    sync(ambiguous.config, "laptops")
    assert refs(ambiguous.asset(chosen["id"])) == [ambiguous.ci["id"]]

    said = ambiguous.link("unlink", chosen)
    assert f"the next sync removes the external ref c2:{ambiguous.ci['id']} from the asset in Hector" in said, said
    reset(ambiguous.sims.c2_url, ambiguous.sims.hector_url)
    sync(ambiguous.config, "laptops")
    assert writes(ambiguous.sims.hector_url) == {ASSET_PATCH: 1} and not refs(ambiguous.asset(chosen["id"]))
    [(outcome, _, _)] = ambiguous.changes("unlink_asset")
    assert outcome == "unlinked"

    reset(ambiguous.sims.c2_url, ambiguous.sims.hector_url)
    sync(ambiguous.config, "laptops")  # matched as new: both assets hold its serial number again
    assert writes(ambiguous.sims.hector_url) == {}, "the CI got no asset of its own, nor a link"
    assert f"matches several unlinked assets: {', '.join(str(a['id']) for a in ambiguous.assets)}" in ambiguous.held()


def test_a_pinned_held_create_is_linked_never_created_twice(write_config: WriteConfig, sims: RunningSimulators) -> None:
    phones = configure(write_config, sims, "phones")
    [phone] = seed_phones(phones, 1)
    # The gateway answers 502 at once; C2 ITSM stores the CI two seconds later: the create is held.
    set_faults(sims.c2_url, store_then_fail_rate=1.0, store_then_fail_with=[502], store_then_fail_late_s=2.0)
    sync(phones, "phones")
    time.sleep(2.5)
    set_faults(sims.c2_url)
    [landed] = c2_cis(phones, "Phones")
    with C2Client.from_settings(phones.c2) as c2:  # someone enters the same phone by hand in C2 ITSM
        raw = c2.get_ci(landed["id"])
        assert raw is not None
        typed_in = str(c2.create_ci(raw["cmdb_id"], raw["category_id"], raw["name"], raw["fields"])["id"])
    reset(sims.c2_url)
    sync(phones, "phones")  # two CIs with its name and values: still held, nothing sent
    assert ci_posts(sims.c2_url) == 0 and journalled(phones) == 1

    shown = cli(phones, "held", "--category", "phones")
    assert shown.returncode == 0 and shown.stdout.startswith("phones: 1 held back"), shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert "C2 ITSM lists 2 CIs with its name and values" in lines[1]
    assert [line.split()[:3] for line in lines[2:]] == [
        ["Hector", "asset", str(phone["id"])], ["C2", "ITSM", "CI"], ["C2", "ITSM", "CI"]], shown.stdout
    assert {line.split()[3] for line in lines[3:]} == {landed["id"], typed_in}
    assert latest_metadata("c2_change_set", "phones")["held"] == 1

    pinned = cli(phones, "link", "--category", "phones", landed["id"], str(phone["id"]))
    assert pinned.returncode == 0, pinned.stderr
    reset(sims.c2_url, sims.hector_url)
    sync(phones, "phones")
    assert ci_posts(sims.c2_url) == 0, "a CI create was sent for the pinned phone"
    assert sorted(ci["id"] for ci in c2_cis(phones, "Phones")) == sorted([landed["id"], typed_in]), "a second CI"
    [asset] = hector_state(phones, "Phones")[1]
    assert refs(asset) == [landed["id"]]
    assert journalled(phones) == 0, "the held create's journal entry is settled"
    assert cli(phones, "held", "--category", "phones").stdout == "phones: nothing held\n"


def test_refusals_say_why_in_one_line_and_write_nothing(ambiguous: Ambiguous) -> None:
    other = next(a for a in hector_state(ambiguous.config, "Laptops")[1] if refs(a) and a not in ambiguous.assets)
    chosen = str(ambiguous.assets[0]["id"])
    laptop = ambiguous.ci["id"]
    store = Store(ambiguous.config.storage.duckdb_path)

    def recorded() -> tuple:
        return store.query("SELECT (SELECT count(*) FROM change_history), (SELECT count(*) FROM link), "
                           "(SELECT count(*) FROM unlink)").row(0)

    before = recorded()
    cases = {  # arguments → (exit status, what the one line says)
        ("link", "--category", "laptops", "ci-29999999", chosen):
            (1, "C2 ITSM CI ci-29999999 is not in the latest snapshots of category 'laptops'"),
        ("link", "--category", "laptops", laptop, "99999"): (1, "Hector asset 99999 is not in the latest snapshots"),
        ("link", "--category", "laptops", refs(other)[0], chosen):
            (1, f"C2 ITSM CI {refs(other)[0]} is already linked to Hector asset {other['id']} (by this tool's link "
                f"table: a sync linked or created them); if that link is wrong, take it back first with hector-sync "
                f"unlink --category laptops {refs(other)[0]} {other['id']}, then link"),
        ("link", "--category", "laptops", laptop, str(other["id"])):
            (1, f"Hector asset {other['id']} is already linked to C2 ITSM CI {refs(other)[0]}"),
        ("unlink", "--category", "laptops", laptop, chosen): (1, "are not linked, so there is nothing to unlink"),
        ("link", "--category", "tablets", laptop, chosen): (2, "category 'tablets': is not configured"),
        ("link", "--category", "laptops", laptop, "nine"): (2, "invalid int value: 'nine'"),
    }
    for args, (status, why) in cases.items():
        done = cli(ambiguous.config, *args)
        assert (done.returncode, done.stdout) == (status, ""), (args, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert why in lines[-1] and (len(lines) == 1 or status == 2), (args, done.stderr)
    assert recorded() == before, "a refusal wrote something"


def test_unlinking_toward_c2_removes_the_ref_then_the_asset_is_new(write_config: WriteConfig, sims: RunningSimulators) -> None:
    """Under hector_to_c2 the ref is removed by the C2 writeback (unlink_ci), under the asset's
    version; the asset, matched as new afterwards, gets a CI of its own and the old CI is left be."""
    phones = configure(write_config, sims, "phones")
    [phone] = seed_phones(phones, 1)
    sync(phones, "phones")
    [ci] = c2_cis(phones, "Phones")
    assert refs(hector_state(phones, "Phones")[1][0]) == [ci["id"]]

    said = cli(phones, "unlink", "--category", "phones", ci["id"], str(phone["id"]))
    assert said.returncode == 0, said.stderr
    assert f"the next sync removes the external ref c2:{ci['id']} from the asset in Hector" in said.stdout, said.stdout
    reset(sims.c2_url, sims.hector_url)
    sync(phones, "phones")
    assert writes(sims.hector_url) == {ASSET_PATCH: 1} and writes(sims.c2_url) == {}
    [asset] = hector_state(phones, "Phones")[1]
    assert not refs(asset)
    unlinked = Store(phones.storage.duckdb_path).query(
        "SELECT outcome, item, target_id FROM change_history WHERE action = 'unlink_ci'").rows()
    assert unlinked == [("unlinked", str(phone["id"]), ci["id"])]

    reset(sims.c2_url, sims.hector_url)
    sync(phones, "phones")
    assert writes(sims.c2_url) == {"POST /api/v1/cmdbs/{cmdb_id}/cis": 1} and writes(sims.hector_url) == {ASSET_PATCH: 1}
    old, new = sorted(c2_cis(phones, "Phones"), key=lambda c: c["id"])
    assert old == ci, "the unlinked CI was written to"
    assert refs(hector_state(phones, "Phones")[1][0]) == [new["id"]] and new["name"] == ci["name"]
