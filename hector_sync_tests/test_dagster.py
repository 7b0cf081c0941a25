"""The sync as Dagster runs it, end to end on loopback: the daily schedule, the failure e-mail
(through the sensor and through `hector-sync sync` without a daemon), parallel category runs on
one DuckDB file, and `hector-sync demo --ui` serving the UI.

Every run is real: the bundled simulators, a real SMTP server (aiosmtpd), a Dagster instance in
a temporary DAGSTER_HOME, the console script as a subprocess.
"""

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest
import requests

from hector_sync.config import load_config
from hector_sync.definitions import build_definitions
from hector_sync.defs.jobs import C2_TO_HECTOR_JOB
from hector_sync.defs.resources import build_resources
from hector_sync.demo import DEMO_C2_PASSWORD, DEMO_C2_READONLY_PASSWORD, DEMO_HECTOR_API_KEY
from hector_sync.hector import HectorClient
from hector_sync.instance import local_instance
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import Mail, Mailbox, WriteConfig
from hector_sync_tests.console import HECTOR_SYNC, demo_ui, hector_sync, summary_rows

SIZE = 40  # CIs per category: every messy record of the sample data, a few pages, quick
FLOWING = ["printers", "laptops", "monitors"]  # direction c2_to_hector in the demo
PARKED = ["phones", "servers"]  # direction: none
NOTIFY = "it-ops@example.org"
WRONG_KEY = "wrong-hector-key-5b1f9e"
SECRETS = (DEMO_C2_PASSWORD, DEMO_C2_READONLY_PASSWORD, DEMO_HECTOR_API_KEY, WRONG_KEY)
ASSET_KEYS = {
    "category_catalog", "c2_cmdb_snapshot", "hector_inventory_snapshot", "desired_hector_models", "desired_c2_cis",
    "hector_change_set", "c2_change_set", "hector_writeback", "c2_writeback",
}
TORONTO = ZoneInfo("America/Toronto")


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """Fresh small simulators per test: the syncs here write to Hector."""
    with start_simulators(size=SIZE) as running:
        yield running


def assert_no_secret(mail: Mail) -> None:
    text = mail.raw.decode("utf-8", "replace") + "\n" + mail.body
    for secret in SECRETS:
        assert secret not in text, f"a secret is in the failure e-mail:\n{text}"


def failure_mail_says(mail: Mail, category: str, *words: str) -> None:
    assert mail.rcpt_tos == [NOTIFY]
    assert mail.message["To"] == NOTIFY
    assert category in mail.message["Subject"]
    body = mail.body
    assert f"Category: {category}" in body, body
    for word in words:
        assert word in body, f"'{word}' is not in the failure e-mail:\n{body}"
    assert f"hector-sync sync --category {category}" in body, body
    errors = [line for line in body.splitlines() if line.startswith("  - ")]
    assert errors and len(errors) == len(set(errors)), f"each error once:\n{body}"
    assert_no_secret(mail)


# --- 1. The schedule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("evening", "read"),
    [
        (datetime(2026, 11, 27, 21, 0, tzinfo=TORONTO), "full"),  # Friday (Saturday in UTC)
        (datetime(2026, 12, 1, 21, 0, tzinfo=TORONTO), "incremental"),  # Tuesday
        (datetime(2026, 11, 26, 21, 0, tzinfo=TORONTO), "incremental"),  # Thursday (Friday in UTC)
    ],
    ids=["friday", "tuesday", "thursday-evening-is-friday-in-utc"],
)
def test_schedule_requests_one_run_per_flowing_category(
    write_config: WriteConfig, evening: datetime, read: str
) -> None:
    path = write_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    defs = build_definitions(str(path))
    schedule = defs.resolve_schedule_def("daily_c2_to_hector")
    assert schedule.job_name == C2_TO_HECTOR_JOB
    assert schedule.cron_schedule == "0 21 * * *"
    assert schedule.execution_timezone == "America/Toronto"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    context = dg.build_schedule_context(scheduled_execution_time=evening,
                                        repository_def=defs.get_repository_def())
    requests_ = schedule.evaluate_tick(context).run_requests or []

    assert [r.partition_key for r in requests_] == FLOWING
    assert all(r.tags.get("hector_sync/read") == read for r in requests_), [r.tags for r in requests_]
    assert len({r.run_key for r in requests_}) == len(FLOWING)


def test_each_direction_has_its_job_and_schedule_for_its_own_categories(write_config: WriteConfig) -> None:
    def edit(data: dict) -> None:
        directions = {"printers": "hector_to_c2", "laptops": "c2_to_hector", "monitors": "hector_to_c2"}
        for category in data["categories"]:
            category["direction"] = directions.get(category["key"], "none")
            if category["key"] == "printers":  # hector_to_c2 writes each C2 field from one Hector field
                category["model"]["description"] = "Description"

    defs = build_definitions(str(write_config("http://127.0.0.1:9", "http://127.0.0.1:9", edit=edit)))
    friday = datetime(2026, 11, 27, 21, 0, tzinfo=TORONTO)
    asked = {}
    for direction in ("c2_to_hector", "hector_to_c2", "per_field"):
        schedule = defs.resolve_schedule_def(f"daily_{direction}")
        assert schedule.job_name == f"{direction}_sync"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        context = dg.build_schedule_context(scheduled_execution_time=friday, repository_def=defs.get_repository_def())
        asked[direction] = [r.partition_key for r in schedule.evaluate_tick(context).run_requests or []]
    assert asked == {"c2_to_hector": ["laptops"], "hector_to_c2": ["printers", "monitors"], "per_field": []}
    writeback = {job: {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}
                 for job in ("c2_to_hector_sync", "hector_to_c2_sync", "per_field_sync")}
    assert "c2_writeback" not in writeback["c2_to_hector_sync"] and "hector_writeback" in writeback["c2_to_hector_sync"]
    assert "hector_writeback" not in writeback["hector_to_c2_sync"] and "c2_writeback" in writeback["hector_to_c2_sync"]
    assert {"hector_writeback", "c2_writeback"} <= writeback["per_field_sync"]
    # every requested partition is one the job knows
    job = defs.resolve_job_def(C2_TO_HECTOR_JOB)
    assert set(FLOWING) <= set(job.partitions_def.get_partition_keys())


def test_a_change_set_rematerialized_on_a_broken_mapping_fails_its_mapping_check(
    sims: RunningSimulators, write_config: WriteConfig,
) -> None:
    """An operator rematerializes one change set after a name vanished from Hector: the check
    says which name, and nothing crashes on the way."""
    path = write_config(sims.c2_url, sims.hector_url)
    config = load_config(path)
    job = build_definitions(str(path)).resolve_job_def(C2_TO_HECTOR_JOB)
    with dg.DagsterInstance.get() as instance:
        assert job.execute_in_process(partition_key="laptops", instance=instance).success
        with HectorClient.from_settings(config.hector) as hector:
            location = next(a.id for a in hector.list_attributes() if a.name == "Location")
        requests.delete(f"{sims.hector_url}/_sim/attributes/{location}", timeout=5).raise_for_status()

        result = job.execute_in_process(partition_key="laptops", instance=instance, raise_on_error=False,
                                        asset_selection=[dg.AssetKey("hector_change_set")])
    materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert materialized == ["hector_change_set"], "the change set crashed before it said what is wrong"
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["mapping_valid"].passed
    assert "Hector has no attribute 'Location' with scope asset" in (checks["mapping_valid"].description or "")


# --- 2. The failure sensor ------------------------------------------------------------------


def test_failure_sensor_emails_the_operator(
    sims: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(sims.c2_url, sims.hector_url)
    monkeypatch.setenv("HECTOR_SYNC_DEMO_HECTOR_API_KEY", WRONG_KEY)  # rotated elsewhere, say
    defs = build_definitions(str(path))
    job = defs.resolve_job_def(C2_TO_HECTOR_JOB)

    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(partition_key="printers", instance=instance,
                                        raise_on_error=False)
        assert not result.success
        sensor = defs.resolve_sensor_def("email_on_sync_failure")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        with dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"smtp": build_resources(str(path))["smtp"]},
        ).for_run_failure() as context:
            sensor(context)

    (mail,) = mailbox.wait_for(1)
    failure_mail_says(mail, "printers", "Hector rejected the API key", "category_catalog")
    assert result.run_id in mail.body


# --- 3. `hector-sync sync` without a daemon -------------------------------------------------


def test_cli_sync_emails_a_failed_category_and_syncs_the_others(
    sims: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox,
) -> None:
    def misspell_a_field(data: dict) -> None:
        printers = next(c for c in data["categories"] if c["key"] == "printers")
        printers["asset_attributes"]["Location"] = "Room"  # C2 Printers has no field "Room"

    path = write_config(sims.c2_url, sims.hector_url, edit=misspell_a_field)
    done = hector_sync("--config", str(path), "sync")

    assert done.returncode == 1, done.stdout + done.stderr
    rows = summary_rows(done.stdout)
    assert [k for k in rows if " " not in k] == FLOWING + PARKED, done.stdout
    assert rows["printers"][0] == "FAILED"
    for key in ["laptops", "monitors"]:
        assert rows[key][0] == "ok", done.stdout
    for key in PARKED:
        assert rows[key][0] == "parked", done.stdout
    for key in ["laptops", "monitors"]:
        assert int(rows[key][1]) > 0, f"{key} created nothing:\n{done.stdout}"  # created
    assert "printers failed" in done.stdout and "Room" in done.stdout

    # smtplib waits for the server's 250, so every mail the process sent is already here
    assert len(mailbox.messages) == 1, [m.message["Subject"] for m in mailbox.messages]
    (mail,) = mailbox.messages
    failure_mail_says(mail, "printers", "Room", "has no field named")


def test_first_full_sync_creates_the_storage_folder(
    sims: RunningSimulators, write_config: WriteConfig, tmp_path: Path,
) -> None:
    """The spec's own example, `duckdb_path: data/hector_sync.duckdb`, on a fresh machine."""

    def in_data_folder(data: dict) -> None:
        data["storage"]["duckdb_path"] = "data/hector_sync.duckdb"  # relative to the file

    path = write_config(sims.c2_url, sims.hector_url, edit=in_data_folder)
    done = hector_sync("--config", str(path), "sync", "--full", "--category", "printers")

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert summary_rows(done.stdout)["printers"][0] == "ok", done.stdout
    assert (tmp_path / "data" / "hector_sync.duckdb").exists()



def test_a_new_dagster_home_keeps_every_run_in_one_event_log_that_dagster_reads(
    sims: RunningSimulators, write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`hector-sync` writes the dagster.yaml of a home it creates: one SQLite event log for every
    run, not a database created per run, which `dagster dev` and the UI read from the same home."""
    path = write_config(sims.c2_url, sims.hector_url)
    home = tmp_path / "new_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for _ in range(2):
        done = hector_sync("--config", str(path), "sync", "--category", "printers")
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]

    assert (home / "events" / "event_log.db").is_file()
    assert not list(home.glob("history/runs/*.db")), "a database per run"
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": "printers"}))
        assert [r.dagster_run.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
        event = instance.get_latest_materialization_event(dg.AssetKey("hector_writeback"))
        assert event is not None and event.run_id == runs[0].dagster_run.run_id

def test_the_ui_follows_a_cli_sync_while_it_runs(
    sims: RunningSimulators, write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator who opens a run that `hector-sync sync` started sees its steps end as they
    end: an instance watching the run's events, as the UI's run page does, hears of each step
    within a second, while the command still runs."""
    path = write_config(sims.c2_url, sims.hector_url)
    monkeypatch.setenv("DAGSTER_HOME", str(local_instance(tmp_path / "live_home")))
    first = hector_sync("--config", str(path), "sync", "--category", "printers")
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    for url in (sims.c2_url, sims.hector_url):  # every call slower: the resync's reads take seconds
        requests.put(f"{url}/_sim/faults", json={"latency_s": 0.3}, timeout=5).raise_for_status()

    heard: dict[str, float] = {}  # step → when the watcher was told it succeeded
    success = dg.DagsterEventType.STEP_SUCCESS
    with dg.DagsterInstance.get() as ui, (tmp_path / "sync.log").open("w") as log:
        sync = subprocess.Popen([HECTOR_SYNC, "--config", str(path), "sync", "--category", "printers"],
                                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + 120
        while not (running := ui.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))):
            assert sync.poll() is None and time.monotonic() < deadline, "never saw the run start"
            time.sleep(0.05)
        ui.watch_event_logs(running[0].run_id, None, lambda entry, _cursor: heard.setdefault(
            entry.step_key or "", time.time()) if entry.dagster_event_type == success else None)
        while sync.poll() is None:
            assert time.monotonic() < deadline, "the sync never ended"
            time.sleep(0.05)
        ended = time.time()
        assert sync.returncode == 0, (tmp_path / "sync.log").read_text()[-3000:]
        steps = {e.step_key: e.timestamp for e in ui.all_logs(running[0].run_id, of_type=success)}

    early = {step: at for step, at in steps.items() if at < ended - 1.0}  # steps the UI had time to show
    assert len(early) >= 2, f"the reads were too quick to watch: {steps}, ended {ended}"
    late = {step: round(heard[step] - at, 2) if step in heard else None for step, at in early.items()
            if step not in heard or heard[step] > at + 1.0}
    assert not late, f"steps the UI heard of late (seconds) or never while the sync ran: {late}"


# --- 4. Parallel category runs on one DuckDB file -------------------------------------------


def test_parallel_category_syncs_share_one_duckdb_file(
    sims: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox,
) -> None:
    path = write_config(sims.c2_url, sims.hector_url)
    procs = {
        key: subprocess.Popen([HECTOR_SYNC, "--config", str(path), "sync", "--category", key],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ.copy())
        for key in FLOWING
    }
    outputs = {key: proc.communicate(timeout=120) for key, proc in procs.items()}
    for key, proc in procs.items():
        out, err = outputs[key]
        assert proc.returncode == 0, f"{key}:\n{out}\n{err[-3000:]}"
        assert summary_rows(out)[key][0] == "ok", out
    assert mailbox.messages == []

    config = load_config(path)
    in_hector = linked_assets_in_hector(config)
    with duckdb.connect(str(config.storage.duckdb_path), read_only=True) as con:

        def one(sql: str, key: str) -> int:
            return con.execute(sql, [key]).fetchone()[0]

        for key in FLOWING:
            assert one("SELECT count(*) FROM c2_ci WHERE category_key = ?", key) == SIZE, key
            active = one("SELECT count(*) FROM c2_ci WHERE category_key = ? AND status = 'active'", key)
            history = "SELECT count(DISTINCT item) FROM change_history WHERE category_key = ? AND "
            skipped = one(history + "outcome = 'skipped'", key)
            placed = one(history + "action IN ('create_asset', 'link_asset') "
                         "AND outcome IN ('created', 'linked')", key)
            links = one("SELECT count(*) FROM link WHERE category_key = ?", key)
            runs = one("SELECT count(DISTINCT run_id) FROM change_history WHERE category_key = ?", key)
            assert 0 < skipped < 10 and runs == 1, (key, skipped, runs)
            assert links == placed == active - skipped == in_hector[key], (
                key, links, placed, active, skipped, in_hector[key])

    # and a sync right after finds Hector as the parallel runs left it: nothing to write
    again = hector_sync("--config", str(path), "sync", "--category", "printers",
                        "--category", "laptops", "--category", "monitors")
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    rows = summary_rows(again.stdout)
    for key in FLOWING:
        status, created, updated, moved, retired, unchanged, *_ = rows[key]
        assert (status, created, updated, moved, retired) == ("ok", "0", "0", "0", "0"), again.stdout
        assert int(unchanged) == in_hector[key], again.stdout
    with duckdb.connect(str(config.storage.duckdb_path), read_only=True) as con:
        for key in FLOWING:
            assets, = con.execute(
                "SELECT count(*) FROM hector_asset WHERE category_key = ? AND c2_ref IS NOT NULL", [key]
            ).fetchone()
            assert assets == in_hector[key], key


def linked_assets_in_hector(config) -> dict[str, int]:
    """Hector's own count, per configured category, of assets linked to a C2 CI."""
    with HectorClient.from_settings(config.hector) as client:
        ids = {c.name: c.id for c in client.list_categories()}
        counts = {}
        for category in config.categories:
            if category.key in FLOWING:
                assets = [a for page in client.iter_asset_pages(category_id=ids[category.hector_category])
                          for a in page]
                counts[category.key] = sum(
                    any(ref.get("source") == "c2" for ref in a.get("external_refs") or [])
                    for a in assets if a.get("status") != "retired"
                )
    return counts


# --- 5. `make demo`: the demo sync, then the Dagster UI -------------------------------------


def test_demo_serves_the_dagster_ui(tmp_path: Path) -> None:
    with demo_ui(tmp_path) as demo:
        printed = demo.printed()
        summary = [line for line in printed.splitlines() if line.startswith("printers ")]
        assert summary and summary[0].split()[2] == "ok", printed[-4000:]

        answer = requests.post(demo.url + "/graphql", json={"query": "{ assetNodes { assetKey { path } } }"},
                               timeout=30)
        assert answer.status_code == 200, answer.text
        listed = {"/".join(node["assetKey"]["path"]) for node in answer.json()["data"]["assetNodes"]}
        assert ASSET_KEYS <= listed, listed

        # the UI serves the instance the demo ran in: a run per synced category (parked ones have none)
        runs = requests.post(demo.url + "/graphql", timeout=30, json={"query": (
            "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }")}).json()
        partitions = sorted(
            tag["value"] for run in runs["data"]["runsOrError"]["results"] for tag in run["tags"]
            if tag["key"] == "dagster/partition"
        )
        assert partitions == sorted(FLOWING), runs
    assert (tmp_path / ".hector-sync" / "hector_sync.duckdb").exists()
