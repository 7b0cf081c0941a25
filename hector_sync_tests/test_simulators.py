"""The simulators over real HTTP on loopback, as the sync's clients will meet them.

One pair of simulators serves the whole module. Tests that write keep to their own corner so
the others can rely on the generated data: Printers and Monitors are never written, CIs are
created only in "Test devices", Hector writes use their own tags and refs.
"""

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from hector_sync.demo import (
    DEMO_C2_PASSWORD, DEMO_C2_READONLY_PASSWORD, DEMO_C2_READONLY_USERNAME, DEMO_C2_USERNAME,
    DEMO_HECTOR_API_KEY, DEMO_SEED, DEMO_SIZE,
)
from hector_sync.simulators.sample_data import (
    AMBIGUOUS_LAPTOP, CATEGORIES, DUPLICATE_SERIAL_OF, MESSY, UNLINKED_LAPTOPS, SampleData, category, ci_id,
    parse_ci_id,
)
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import default_signals

API = "/api/v1"
PRINTERS = category("Printers")
LAPTOPS = category("Laptops")


@pytest.fixture(scope="module")
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(seed=DEMO_SEED, size=DEMO_SIZE) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults(sims: RunningSimulators) -> Iterator[None]:
    yield
    for url in (sims.c2_url, sims.hector_url):
        requests.put(f"{url}/_sim/faults", json={}).raise_for_status()


def c2_session(sims: RunningSimulators, username: str = DEMO_C2_USERNAME,
               password: str = DEMO_C2_PASSWORD) -> requests.Session:
    session = requests.Session()
    answer = session.post(f"{sims.c2_url}{API}/auth/login",
                          json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
    return session


def hector_session(key: str = DEMO_HECTOR_API_KEY) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    return session


def error_code(answer: requests.Response) -> str:
    return answer.json()["error"]["code"]


def ci_page(session: requests.Session, url: str, **params: Any) -> dict[str, Any]:
    answer = session.get(f"{url}{API}/cmdbs/cmdb-1/cis", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def by_name(spec_fields: dict[str, Any], ci: dict[str, Any], name: str) -> Any:
    return ci["fields"].get(spec_fields[name])


def field_ids(session: requests.Session, url: str, cmdb: str, category_id: str) -> dict[str, str]:
    answer = session.get(f"{url}{API}/cmdbs/{cmdb}/categories/{category_id}/fields")
    return {f["name"]: f["id"] for f in answer.json()["items"]}


# --- sample data ------------------------------------------------------------------------


def test_same_seed_serves_the_same_cis_and_another_seed_different_ones(
        sims: RunningSimulators) -> None:
    reference = sims.c2.data.reference
    first = ci_page(c2_session(sims), sims.c2_url, category_id=PRINTERS.id, page_size=50)
    with start_simulators(seed=DEMO_SEED, reference=reference) as same, \
            start_simulators(seed=DEMO_SEED + 1, reference=reference) as other:
        again = ci_page(c2_session(same), same.c2_url, category_id=PRINTERS.id, page_size=50)
        changed = ci_page(c2_session(other), other.c2_url, category_id=PRINTERS.id, page_size=50)
    assert again == first
    assert [ci["id"] for ci in changed["items"]] == [ci["id"] for ci in first["items"]]
    assert [ci["fields"] for ci in changed["items"]] != [ci["fields"] for ci in first["items"]]
    assert first["items"][0] == SampleData(DEMO_SEED, reference=reference).ci_at("Printers", 0)


def test_messy_records_are_where_the_generator_documents_them(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    for spec in (PRINTERS, LAPTOPS):
        names = field_ids(session, sims.c2_url, "cmdb-1", spec.id)

        def ci(kind: str) -> dict[str, Any]:
            return session.get(f"{sims.c2_url}{API}/cis/{ci_id(spec.name, MESSY[kind])}").json()

        assert by_name(names, ci("blank_maker"), "Manufacturer") == ""
        assert by_name(names, ci("whitespace_model"), "Model").strip() == ""
        assert by_name(names, ci("whitespace_model"), "Model") != ""
        padded = by_name(names, ci("padded_maker"), "Manufacturer")
        assert padded != padded.strip() and padded.strip()
        original = session.get(f"{sims.c2_url}{API}/cis/{ci_id(spec.name, DUPLICATE_SERIAL_OF)}")
        assert (by_name(names, ci("duplicate_serial"), "SerialNumber")
                == by_name(names, original.json(), "SerialNumber"))
        assert ci("retired")["status"] == "retired"
        assert names["Description"] not in ci("no_description")["fields"]
    printers = field_ids(session, sims.c2_url, "cmdb-1", PRINTERS.id)
    assert by_name(printers, session.get(
        f"{sims.c2_url}{API}/cis/{ci_id('Printers', MESSY['padded_maker'])}").json(),
        "Manufacturer") == "  HP "


def test_cis_share_catalogue_models_and_carry_non_latin_text(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    names = field_ids(session, sims.c2_url, "cmdb-1", PRINTERS.id)
    items = ci_page(session, sims.c2_url, category_id=PRINTERS.id, page_size=500)["items"]
    models = Counter((by_name(names, ci, "Manufacturer"), by_name(names, ci, "Model"))
                     for ci in items)
    assert models[("HP", "LaserJet M404")] > 30
    assert len(models) < 15
    serials = Counter(by_name(names, ci, "SerialNumber") for ci in items)
    assert [n for n in serials.values() if n > 1] == [2]
    locations = {by_name(names, ci, "Location") for ci in items}
    assert {"東京オフィス", "Москва", "Zürich", "Montréal – 3e étage"} <= locations
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", by_name(names, ci, "PurchaseDate"))
               for ci in items)
    assert all(isinstance(by_name(names, ci, "Cost"), float) for ci in items)


# --- C2 ITSM ----------------------------------------------------------------------------


def test_pages_cover_the_category_once_in_id_order(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    ids: list[str] = []
    pages = []
    page: int | None = 1
    while page is not None:
        answer = ci_page(session, sims.c2_url, category_id=PRINTERS.id, page=page, page_size=120)
        assert answer["total_count"] == DEMO_SIZE and answer["page_size"] == 120
        ids += [ci["id"] for ci in answer["items"]]
        pages.append((answer["page"], answer["next_page"]))
        page = answer["next_page"]
    assert pages == [(1, 2), (2, 3), (3, None)]
    assert ids == sorted(ids) == list(sims.c2.data.ci_ids("Printers"))
    beyond = ci_page(session, sims.c2_url, category_id=PRINTERS.id, page=9, page_size=120)
    assert beyond["items"] == [] and beyond["next_page"] is None
    whole = ci_page(session, sims.c2_url, page_size=500, page=2)
    assert whole["total_count"] >= 5 * DEMO_SIZE
    assert whole["items"][0]["id"] == ci_id("Laptops", 500 - DEMO_SIZE)


@pytest.mark.parametrize("params", [{"page_size": 501}, {"page_size": 0}, {"page": 0},
                                    {"modified_since": "yesterday"},
                                    {"modified_since": "2026-01-01T00:00:00"}])
def test_bad_list_parameters_are_400(sims: RunningSimulators, params: dict[str, Any]) -> None:
    answer = c2_session(sims).get(f"{sims.c2_url}{API}/cmdbs/cmdb-1/cis",
                                  params={"category_id": PRINTERS.id, **params})
    assert answer.status_code == 400
    assert error_code(answer) == "bad_request" and answer.json()["error"]["message"]


def test_unknown_cmdb_category_and_ci_are_404(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    for path in ("/cmdbs/cmdb-9/categories", "/cmdbs/cmdb-2/categories/cat-7/fields",
                 "/cis/ci-19999999", "/cis/nonsense"):
        answer = session.get(f"{sims.c2_url}{API}{path}")
        assert answer.status_code == 404 and error_code(answer) == "not_found", path


def test_modified_since_keeps_recent_cis_including_fresh_writes(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    week_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7 * 86400))
    recent = ci_page(session, sims.c2_url, category_id=PRINTERS.id, modified_since=week_ago,
                     page_size=500)
    assert 0 < recent["total_count"] < DEMO_SIZE * 0.15
    assert all(ci["modified_at"] >= week_ago for ci in recent["items"])

    phones = category("Phones")
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    target = session.get(f"{sims.c2_url}{API}/cis/{ci_id('Phones', 200)}").json()
    session.patch(f"{sims.c2_url}{API}/cis/{target['id']}", json={"name": "PHN-renamed"},
                  headers={"If-Match": str(target["version"])}).raise_for_status()
    fresh = ci_page(session, sims.c2_url, category_id=phones.id, modified_since=before)
    assert [ci["id"] for ci in fresh["items"]] == [target["id"]]


def test_tokens_expire_and_a_new_login_works(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    cmdbs = f"{sims.c2_url}{API}/cmdbs"
    assert session.get(cmdbs).status_code == 200
    assert requests.post(f"{sims.c2_url}/_sim/expire-tokens").status_code == 200
    answer = session.get(cmdbs)
    assert answer.status_code == 401 and error_code(answer) == "token_expired"
    assert c2_session(sims).get(cmdbs).status_code == 200

    requests.put(f"{sims.c2_url}/_sim/faults", json={"token_expire_every": 2}).raise_for_status()
    session = c2_session(sims)
    assert [session.get(cmdbs).status_code for _ in range(3)] == [200, 200, 401]

    requests.put(f"{sims.c2_url}/_sim/faults", json={"token_ttl_s": 1}).raise_for_status()
    login = requests.post(f"{sims.c2_url}{API}/auth/login",
                          json={"username": DEMO_C2_USERNAME, "password": DEMO_C2_PASSWORD})
    assert login.json()["expires_in"] == 1
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    assert requests.get(cmdbs, headers=headers).status_code == 200
    time.sleep(1.1)
    assert error_code(requests.get(cmdbs, headers=headers)) == "token_expired"


def test_bad_credentials_and_tokens_are_401(sims: RunningSimulators) -> None:
    login = requests.post(f"{sims.c2_url}{API}/auth/login",
                          json={"username": DEMO_C2_USERNAME, "password": "wrong"})
    assert login.status_code == 401
    for headers in ({}, {"Authorization": "Bearer made-up"}):
        answer = requests.get(f"{sims.c2_url}{API}/cmdbs", headers=headers)
        assert answer.status_code == 401 and error_code(answer) == "unauthorized"


def test_read_only_account_reads_but_cannot_write(sims: RunningSimulators) -> None:
    session = c2_session(sims, DEMO_C2_READONLY_USERNAME, DEMO_C2_READONLY_PASSWORD)
    ci = session.get(f"{sims.c2_url}{API}/cis/{ci_id('Servers', 1)}")
    assert ci.status_code == 200
    patch = session.patch(f"{sims.c2_url}{API}/cis/{ci.json()['id']}", json={"name": "x"},
                          headers={"If-Match": str(ci.json()["version"])})
    create = session.post(f"{sims.c2_url}{API}/cmdbs/cmdb-2/cis",
                          json={"category_id": "cat-12", "name": "x"})
    for answer in (patch, create):
        assert answer.status_code == 403 and error_code(answer) == "forbidden"


def test_patch_needs_the_current_version_and_merges_fields(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    servers = field_ids(session, sims.c2_url, "cmdb-1", "cat-11")
    url = f"{sims.c2_url}{API}/cis/{ci_id('Servers', 2)}"
    ci = session.get(url).json()
    stale = session.patch(url, json={"name": "x"}, headers={"If-Match": str(ci["version"] - 1)})
    assert stale.status_code == 409 and error_code(stale) == "version_conflict"
    assert session.patch(url, json={"name": "x"}).status_code == 428
    changes = {"status": "retired",
               "fields": {servers["Cost"]: 9999.5, servers["WarrantyEnd"]: None}}
    updated = session.patch(url, json=changes, headers={"If-Match": str(ci["version"])})
    assert updated.status_code == 200
    body = updated.json()
    assert body["version"] == ci["version"] + 1 and body["status"] == "retired"
    assert body["fields"][servers["Cost"]] == 9999.5
    assert servers["WarrantyEnd"] not in body["fields"]
    assert body["fields"][servers["SerialNumber"]] == ci["fields"][servers["SerialNumber"]]
    assert body["modified_at"] > ci["modified_at"]
    assert session.get(url).json() == body


def test_wrong_field_ids_and_types_are_422_with_details(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    servers = field_ids(session, sims.c2_url, "cmdb-1", "cat-11")
    url = f"{sims.c2_url}{API}/cis/{ci_id('Servers', 3)}"
    version = session.get(url).json()["version"]
    bad = {"f-999": "x", servers["Cost"]: "12", servers["PurchaseDate"]: "2024-02-30",
           servers["Owner"]: "not an e-mail", servers["Location"]: 7}
    answer = session.patch(url, json={"fields": bad}, headers={"If-Match": str(version)})
    assert answer.status_code == 422 and error_code(answer) == "invalid_field"
    assert {d["field"] for d in answer.json()["error"]["details"]} == set(bad)
    assert session.get(url).json()["version"] == version


def test_created_cis_sort_after_the_generated_ones(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    names = field_ids(session, sims.c2_url, "cmdb-2", "cat-12")
    created = session.post(f"{sims.c2_url}{API}/cmdbs/cmdb-2/cis", json={
        "category_id": "cat-12", "name": "TST-new", "fields": {names["Model"]: "Pico 2"}})
    assert created.status_code == 201, created.text
    ci = created.json()
    assert ci["version"] == 1 and ci["fields"] == {names["Model"]: "Pico 2"}
    listed = session.get(f"{sims.c2_url}{API}/cmdbs/cmdb-2/cis",
                         params={"category_id": "cat-12", "page_size": 500}).json()
    assert listed["items"][-1] == ci
    assert ci["id"] > ci_id("Test devices", DEMO_SIZE - 1)
    missing = session.post(f"{sims.c2_url}{API}/cmdbs/cmdb-2/cis", json={"category_id": "cat-7"})
    assert missing.status_code == 422


# --- Hector -----------------------------------------------------------------------------


def test_hector_rejects_a_wrong_or_revoked_key(sims: RunningSimulators) -> None:
    url = f"{sims.hector_url}{API}/stockrooms"
    assert hector_session().get(url).status_code == 200
    for answer in (hector_session("wrong").get(url), requests.get(url)):
        assert answer.status_code == 401 and error_code(answer) == "unauthorized"
    requests.put(f"{sims.hector_url}/_sim/faults", json={"revoked": True}).raise_for_status()
    assert error_code(hector_session().get(url)) == "unauthorized"


def test_hector_lists_page_with_limit_and_offset(sims: RunningSimulators) -> None:
    session = hector_session()
    url = f"{sims.hector_url}{API}/categories"
    everything = session.get(url).json()
    assert everything["total"] == 7 and len(everything["rows"]) == 7
    assert {r["type"] for r in everything["rows"]} == {"serialized", "lot", "kit"}
    window = session.get(url, params={"limit": 2, "offset": 3}).json()
    assert window == {"total": 7, "rows": everything["rows"][3:5]}
    for limit in (0, 1001):
        answer = session.get(url, params={"limit": limit})
        assert answer.status_code == 400 and error_code(answer) == "bad_request"
    rooms = session.get(f"{sims.hector_url}{API}/stockrooms").json()["rows"]
    assert rooms[0] == {"id": 1, "name": "Main warehouse"} and rooms[2]["name"] == "東京 倉庫"


def test_seeded_unlinked_laptops_match_ci_serials(sims: RunningSimulators) -> None:
    session = hector_session()
    laptops = next(c["id"] for c in session.get(f"{sims.hector_url}{API}/categories").json()["rows"]
                   if c["name"] == "Laptops")
    rows = session.get(f"{sims.hector_url}{API}/assets", params={"category_id": laptops}).json()
    serials = Counter(r["attributes"].get("Serial number") for r in rows["rows"]
                      if not r["external_refs"])
    for index in UNLINKED_LAPTOPS:
        assert serials[sims.c2.data.serial("Laptops", index)] == 1
    assert serials[sims.c2.data.serial("Laptops", AMBIGUOUS_LAPTOP)] == 2


def test_duplicate_subcategory_is_found_trimmed_and_case_insensitively(
        sims: RunningSimulators) -> None:
    session = hector_session()
    url = f"{sims.hector_url}{API}/subcategories"
    existing = [r for r in session.get(url, params={"category_id": 13}).json()["rows"]
                if r["maker"] == "DELL"]
    assert len(existing) == 1
    answer = session.post(url, json={"category_id": 13, "maker": " dell", "model": "LATITUDE 5440",
                                     "description": "14-inch business laptop  "})
    assert answer.status_code == 409 and error_code(answer) == "duplicate"
    assert answer.json()["error"]["existing_id"] == existing[0]["id"]
    elsewhere = session.post(url, json={"category_id": 12, "maker": "Dell",
                                        "model": "Latitude 5440",
                                        "description": "14-inch business laptop"})
    assert elsewhere.status_code == 201 and elsewhere.json()["version"] == 1


def test_subcategory_problems_are_422(sims: RunningSimulators) -> None:
    url = f"{sims.hector_url}{API}/subcategories"
    answer = hector_session().post(url, json={
        "category_id": 12, "maker": "  ", "model": "M1", "attributes": {"Serial number": "x"}})
    assert answer.status_code == 422
    fields = {d["field"] for d in answer.json()["error"]["details"]}
    assert {"maker", "description"} <= fields
    scoped = hector_session().post(url, json={
        "category_id": 12, "maker": "HP", "model": "M1", "description": "d",
        "attributes": {"Serial number": "x"}})
    assert scoped.status_code == 422
    assert scoped.json()["error"]["details"][0]["field"] == "attributes.Serial number"


def test_assets_are_unique_by_tag_in_category_and_by_external_ref(
        sims: RunningSimulators) -> None:
    session = hector_session()
    url = f"{sims.hector_url}{API}/assets"
    body = {"subcategory_id": 40, "stockroom_id": 1, "title": "PRN-00042", "asset_tag": "T-DUP-1",
            "external_refs": [{"source": "c2", "id": "ci-dup-1"}],
            "attributes": {"Serial number": "SN-1"}, "acquisition_date": "2024-03-01"}
    first = session.post(url, json=body)
    assert first.status_code == 201, first.text
    asset = first.json()
    assert asset["category_id"] == 12 and asset["status"] == "in_stock"
    same_tag = session.post(url, json={**body, "external_refs": []})
    same_ref = session.post(url, json={**body, "asset_tag": "T-DUP-2"})
    for answer in (same_tag, same_ref):
        assert answer.status_code == 409 and error_code(answer) == "duplicate"
        assert answer.json()["error"]["existing_id"] == asset["id"]
    other_category = session.post(url, json={**body, "subcategory_id": 43, "external_refs": []})
    assert other_category.status_code == 201
    found = session.get(url, params={"external_ref": "c2:ci-dup-1"}).json()
    assert found == {"total": 1, "rows": [asset]}


def test_asset_problems_are_422(sims: RunningSimulators) -> None:
    answer = hector_session().post(f"{sims.hector_url}{API}/assets", json={
        "subcategory_id": 40, "stockroom_id": 1, "title": "x", "acquisition_date": "01/03/2024",
        "attributes": {"Colour": "red", "Form factor": "Desktop"}})
    assert answer.status_code == 422
    assert {d["field"] for d in answer.json()["error"]["details"]} == {"acquisition_date"}
    unknown = hector_session().post(f"{sims.hector_url}{API}/assets", json={
        "subcategory_id": 40, "stockroom_id": 1, "title": "x",
        "attributes": {"Colour": "red", "Form factor": "Desktop"}})
    assert {d["field"] for d in unknown.json()["error"]["details"]} == {
        "attributes.Colour", "attributes.Form factor"}
    missing = hector_session().post(f"{sims.hector_url}{API}/assets", json={"title": " "})
    assert {d["field"] for d in missing.json()["error"]["details"]} == {
        "subcategory_id", "stockroom_id", "title"}


def test_asset_patch_moves_model_and_category_under_if_match(sims: RunningSimulators) -> None:
    session = hector_session()
    created = session.post(f"{sims.hector_url}{API}/assets", json={
        "subcategory_id": 41, "stockroom_id": 2, "title": "LAP-move", "asset_tag": "T-MOVE",
        "attributes": {"Owner": "anna.martin@example.com", "Serial number": "SN-MOVE"}}).json()
    url = f"{sims.hector_url}{API}/assets/{created['id']}"
    change = {"subcategory_id": 43, "status": "retired", "attributes": {"Owner": None},
              "external_refs": [{"source": "c2", "id": "ci-moved"}]}
    stale = session.patch(url, json=change, headers={"If-Match": "0"})
    assert stale.status_code == 409 and error_code(stale) == "version_conflict"
    moved = session.patch(url, json=change, headers={"If-Match": "1"})
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert (body["category_id"], body["subcategory_id"], body["version"]) == (14, 43, 2)
    assert body["attributes"] == {"Serial number": "SN-MOVE"} and body["status"] == "retired"
    in_monitors = session.get(f"{sims.hector_url}{API}/assets",
                              params={"category_id": 14, "external_ref": "c2:ci-moved"}).json()
    assert in_monitors["rows"] == [body]
    assert session.patch(f"{sims.hector_url}{API}/assets/999999", json={},
                         headers={"If-Match": "1"}).status_code == 404


def test_updated_since_finds_only_later_writes(sims: RunningSimulators) -> None:
    session = hector_session()
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    created = session.post(f"{sims.hector_url}{API}/subcategories", json={
        "category_id": 15, "maker": "Yealink", "model": "T54W", "description": "IP phone"}).json()
    later = session.get(f"{sims.hector_url}{API}/subcategories",
                        params={"updated_since": since, "category_id": 15}).json()
    assert later == {"total": 1, "rows": [created]}


# --- faults and statistics --------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(sims: RunningSimulators) -> None:
    requests.put(f"{sims.hector_url}/_sim/faults", json={"rate_limit_per_s": 5}).raise_for_status()
    session = hector_session()
    url = f"{sims.hector_url}{API}/stockrooms"
    started = time.monotonic()
    answers = [session.get(url) for _ in range(30)]
    elapsed = time.monotonic() - started
    passed = sum(a.status_code == 200 for a in answers)
    assert 5 <= passed <= 5 + 5 * elapsed + 1
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(int(a.headers["Retry-After"]) >= 1 for a in limited)
    assert error_code(limited[0]) == "rate_limited"
    time.sleep(1.0)
    assert session.get(url).status_code == 200


def test_random_faults_follow_their_rates_reproducibly(sims: RunningSimulators) -> None:
    session = hector_session()
    url = f"{sims.hector_url}{API}/stockrooms"
    faults = {"fail_429_rate": 0.2, "fail_503_rate": 0.3, "seed": 7}

    def statuses() -> list[int]:
        requests.put(f"{sims.hector_url}/_sim/faults", json=faults).raise_for_status()
        return [session.get(url).status_code for _ in range(200)]

    first = statuses()
    counts = Counter(first)
    assert 20 <= counts[429] <= 60 and 40 <= counts[503] <= 80
    assert statuses() == first


def test_down_latency_and_dropped_connections(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    url = f"{sims.c2_url}{API}/cmdbs"
    requests.put(f"{sims.c2_url}/_sim/faults", json={"down": True}).raise_for_status()
    assert session.get(url).status_code == 503
    assert requests.get(f"{sims.c2_url}/_sim/stats").status_code == 200
    requests.put(f"{sims.c2_url}/_sim/faults",
                 json={"latency_s": 0.3, "latency_fraction": 1}).raise_for_status()
    started = time.monotonic()
    assert session.get(url).status_code == 200
    assert time.monotonic() - started >= 0.3
    requests.put(f"{sims.c2_url}/_sim/faults", json={"drop_connection_rate": 1}).raise_for_status()
    with pytest.raises(requests.ConnectionError):
        session.get(url)
    requests.put(f"{sims.c2_url}/_sim/faults", json={}).raise_for_status()
    assert session.get(url).status_code == 200


def test_cut_bodies_stop_half_way_and_are_counted(sims: RunningSimulators) -> None:
    url = f"{sims.hector_url}{API}/assets"
    requests.post(f"{sims.hector_url}/_sim/stats/reset").raise_for_status()
    requests.put(f"{sims.hector_url}/_sim/faults", json={"cut_body_rate": 1}).raise_for_status()
    answer = hector_session().get(url, stream=True)
    length = int(answer.headers["Content-Length"])
    assert answer.status_code == 200 and length > 1
    half = length // 2
    with pytest.raises(requests.exceptions.ChunkedEncodingError,
                       match=rf"IncompleteRead\({half} bytes read, {length - half} more expected\)"):
        answer.content  # noqa: B018 (reads the body)
    stats = requests.get(f"{sims.hector_url}/_sim/stats").json()  # /_sim is never cut
    assert stats["by_status"] == {"cut": 1}
    requests.put(f"{sims.hector_url}/_sim/faults", json={"cut_body_rate": 0}).raise_for_status()
    assert all(hector_session().get(url).json()["rows"] for _ in range(10))
    stats = requests.get(f"{sims.hector_url}/_sim/stats").json()
    assert stats["by_route"] == {"GET /api/v1/assets": 11}
    assert stats["by_status"] == {"cut": 1, "200": 10}


def test_unknown_fault_switch_is_refused(sims: RunningSimulators) -> None:
    answer = requests.put(f"{sims.c2_url}/_sim/faults", json={"revoked": True})
    assert answer.status_code == 422 and answer.json()["error"]["details"][0]["field"] == "revoked"


def test_stats_count_calls_per_method_route_and_status(sims: RunningSimulators) -> None:
    session = c2_session(sims)
    requests.post(f"{sims.c2_url}/_sim/stats/reset").raise_for_status()
    for _ in range(3):
        session.get(f"{sims.c2_url}{API}/cis/{ci_id('Monitors', 1)}")
    session.patch(f"{sims.c2_url}{API}/cis/{ci_id('Monitors', 1)}", json={})
    stats = requests.get(f"{sims.c2_url}/_sim/stats").json()
    assert stats["calls"] == 4
    assert stats["by_method"] == {"GET": 3, "PATCH": 1}
    assert stats["by_route"] == {"GET /api/v1/cis/{ci}": 3, "PATCH /api/v1/cis/{ci}": 1}
    assert stats["by_status"] == {"200": 3, "428": 1}


# page → (first, last + 1) of the items it answers, as positions in the whole list, and next_page
NORMAL = {1: (0, 100, 2), 2: (100, 200, 3), 3: (200, 300, None), 4: (0, 0, None)}


@pytest.mark.parametrize(("switches", "pages"), [
    pytest.param({"listing_short": 150}, {1: (0, 100, 2), 2: (100, 150, None), 3: (0, 0, None)}, id="short"),
    pytest.param({"listing_skip_page": 1}, {**NORMAL, 1: (100, 200, 2)}, id="skip"),
    pytest.param({"listing_repeat_page": 2}, {**NORMAL, 2: (0, 100, 3)}, id="repeat"),
    pytest.param({"listing_endless": True}, {**NORMAL, 3: (200, 300, 4), 4: (200, 300, 5), 9: (200, 300, 10)},
                 id="endless"),
])
def test_c2_listing_switches_break_the_pages_not_the_total(
    sims: RunningSimulators, switches: dict[str, Any], pages: dict[int, tuple[int, int, int | None]]
) -> None:
    session = c2_session(sims)
    ids = list(sims.c2.data.ci_ids("Printers"))
    assert len(ids) == DEMO_SIZE == 300
    requests.put(f"{sims.c2_url}/_sim/faults", json=switches).raise_for_status()
    for page, (first, stop, next_page) in pages.items():
        answer = ci_page(session, sims.c2_url, category_id=PRINTERS.id, page=page, page_size=100)
        assert answer["total_count"] == 300, page
        assert ([ci["id"] for ci in answer["items"]], answer["next_page"]) == (ids[first:stop], next_page), page


def test_hector_listing_switches_break_the_windows_of_the_lists_they_name(sims: RunningSimulators) -> None:
    session = hector_session()

    def window(path: str, offset: int, limit: int = 1) -> tuple[int, list[int]]:
        answer = session.get(f"{sims.hector_url}{API}/{path}", params={"limit": limit, "offset": offset}).json()
        return answer["total"], [row["id"] for row in answer["rows"]]

    def faults(**switches: Any) -> None:
        requests.put(f"{sims.hector_url}/_sim/faults", json=switches).raise_for_status()

    n, ids = window("assets", 0, 1000)
    models = window("subcategories", 0, 1000)
    assert n == len(ids) >= 4 and models[0] >= 3
    # windows of one row: page k is the window at offset k - 1
    faults(listing_short=2, listing_lists=["assets"])
    assert [window("assets", offset) for offset in (0, n - 3, n - 2)] == [(n, ids[:1]), (n, ids[n - 3:n - 2]), (n, [])]
    assert window("subcategories", 0, 1000) == models  # not named: untouched
    faults(listing_skip_page=2)
    assert [window("assets", offset) for offset in (0, 1, 2)] == [(n, ids[0:1]), (n, ids[2:3]), (n, ids[2:3])]
    assert window("subcategories", 1) == (models[0], models[1][2:3])  # both lists by default
    faults(listing_repeat_page=2)
    assert [window("assets", offset) for offset in (0, 1, 2)] == [(n, ids[0:1]), (n, ids[0:1]), (n, ids[2:3])]
    faults(listing_endless=True)
    assert window("assets", n) == window("assets", n + 10) == (n, ids[-1:])
    assert requests.put(f"{sims.hector_url}/_sim/faults", json={"listing_repeat_page": 1}).status_code == 422


# --- copies of Printers (benchmarks of many categories) --------------------------------------


def test_copies_list_and_page_like_the_others_and_leave_the_defaults_alone() -> None:
    reference = 1_800_000_000
    plain, copied = SampleData(reference=reference), SampleData(reference=reference, copies=2)
    for spec in CATEGORIES:
        assert list(copied.ci_ids(spec.name)) == list(plain.ci_ids(spec.name))
        assert [copied.ci_at(spec.name, i) for i in range(60)] == [plain.ci_at(spec.name, i) for i in range(60)]
    assert SampleData(reference=reference, copies=0).hector_seed() == plain.hector_seed()
    assert copied.hector_seed().categories[:-2] == plain.hector_seed().categories
    assert ci_id("Laptops", 42) == "ci-20000042" and parse_ci_id("ci-90100042") is None
    with start_simulators(size=60, copies=2) as sims:
        session = c2_session(sims)
        listed = session.get(f"{sims.c2_url}{API}/cmdbs/cmdb-1/categories").json()["items"]
        assert listed[-2:] == [{"id": "cat-101", "name": "Printers 01"}, {"id": "cat-102", "name": "Printers 02"}]
        fields = session.get(f"{sims.c2_url}{API}/cmdbs/cmdb-1/categories/cat-102/fields").json()["items"]
        assert [(f["name"], f["type"]) for f in fields] == [(f.name, f.type) for f in PRINTERS.fields]
        ids: list[str] = []
        page: int | None = 1
        while page is not None:
            answer = ci_page(session, sims.c2_url, category_id="cat-102", page=page, page_size=25)
            assert answer["total_count"] == 60
            ids += [ci["id"] for ci in answer["items"]]
            page = answer["next_page"]
        assert ids == [f"ci-902{i:05d}" for i in range(60)]
        assert session.get(f"{sims.c2_url}{API}/cis/ci-90200059").json()["name"] == "PRN-00059"
        assert session.get(f"{sims.c2_url}{API}/cis/ci-90200060").status_code == 404
        created = session.post(f"{sims.c2_url}{API}/cmdbs/cmdb-1/cis", json={"category_id": "cat-101", "name": "New"})
        assert created.status_code == 201 and created.json()["id"] == "ci-90100060"
        hector = hector_session()
        categories = hector.get(f"{sims.hector_url}{API}/categories").json()["rows"]
        assert categories[-2:] == [{"id": 101, "name": "Printers 01", "type": "serialized"},
                                   {"id": 102, "name": "Printers 02", "type": "serialized"}]
        model = {"category_id": 102, "maker": "HP", "model": "LaserJet M404", "description": "Mono laser printer"}
        assert hector.post(f"{sims.hector_url}{API}/subcategories", json=model).status_code == 201
        found = hector.get(f"{sims.hector_url}{API}/subcategories", params={"category_id": 102}).json()
        assert found["total"] == 1
    with pytest.raises(ValueError, match="copies must be"):
        SampleData(copies=100)


# --- a million CIs, in a process of their own -------------------------------------------


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
    assert match
    return int(match.group(1))


def test_a_million_cis_page_through_in_bounded_memory() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "hector_sync.simulators", "--c2-port", "0", "--hector-port", "0",
         "--seed", "42", "--size", "300", "--sizes", "Laptops=1000000"],
        stdout=subprocess.PIPE, text=True, preexec_fn=default_signals)
    try:
        assert process.stdout is not None
        c2_url = process.stdout.readline().split()[-1]
        assert process.stdout.readline().split()[-1].startswith("http://127.0.0.1:")
        session = requests.Session()
        token = session.post(f"{c2_url}{API}/auth/login", json={
            "username": DEMO_C2_USERNAME, "password": DEMO_C2_PASSWORD}).json()["token"]
        session.headers["Authorization"] = f"Bearer {token}"
        ci_page(session, c2_url, category_id=LAPTOPS.id, page_size=500)
        before = _peak_rss_kib(process.pid)
        count, last, page = 0, "", 1
        while page:
            answer = ci_page(session, c2_url, category_id=LAPTOPS.id, page=page, page_size=500)
            assert answer["total_count"] == 1_000_000
            for ci in answer["items"]:
                assert ci["id"] > last
                last = ci["id"]
            count += len(answer["items"])
            page = answer["next_page"]
        grown_mib = (_peak_rss_kib(process.pid) - before) / 1024
        assert count == 1_000_000 and last == ci_id("Laptops", 999_999)
        assert grown_mib < 150
    finally:
        process.terminate()
        process.wait(timeout=10)
