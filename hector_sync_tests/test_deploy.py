"""The production instance of deploy/dagster.yaml against a real PostgreSQL server.

A throwaway PostgreSQL cluster (Debian's server binaries, /usr/lib/postgresql/*/bin) listens on
a free loopback port with a password; deploy/dagster.yaml, copied unchanged into a fresh
DAGSTER_HOME, reads its connection from DAGSTER_PG_*. A real `hector-sync sync` against the
simulators must then leave its run, its materializations and the schedule tables in PostgreSQL
and nothing in SQLite; and the queued-run daemon must hold back a run over the C2 ITSM tag limit.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import psycopg2.extensions
import pytest
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from hector_sync.definitions import build_definitions
from hector_sync.defs.jobs import C2_TO_HECTOR_JOB
from hector_sync.defs.tags import C2_ITSM_TAG, HECTOR_TAG, SYSTEM_TAGS
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import WriteConfig, free_port
from hector_sync_tests.console import hector_sync, summary_rows

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_INSTANCE = ROOT / "deploy" / "dagster.yaml"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_USER = "dagster"
PRINTERS_ASSETS = {
    "category_catalog", "c2_cmdb_snapshot", "hector_inventory_snapshot", "desired_hector_models", "hector_change_set",
    "hector_writeback",
}
SCHEDULE_TABLES = {"jobs", "job_ticks", "instigators"}  # dagster's schedule storage


# --- a real PostgreSQL server ----------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The bin folder of the highest PostgreSQL version installed the Debian way, if any."""
    found = [Path(p) for p in glob.glob(PG_BIN_GLOB)
             if all((Path(p) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))]
    versioned = [p for p in found if re.fullmatch(r"\d+(\.\d+)?", p.parent.name)]
    return max(versioned, key=lambda p: float(p.parent.name), default=None)


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def connect(self, db: str = "postgres") -> psycopg2.extensions.connection:
        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=db, connect_timeout=5)

    def new_database(self, name: str) -> str:
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def env(self, db: str) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USERNAME": self.user, "DAGSTER_PG_PASSWORD": self.password,
                "DAGSTER_PG_DB": db}



@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """Small simulators for this test alone: the sync writes to Hector."""
    with start_simulators(size=40) as running:
        yield running

@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster in a folder under /tmp, on a free port of 127.0.0.1, password auth.

    initdb and postgres refuse to run as root: as root, they run as Debian's `postgres` user,
    which owns the folder (pytest's tmp_path under /root would not be traversable for it).
    """
    bindir = postgres_bindir()
    if bindir is None:
        reason = (f"no PostgreSQL server binaries under {PG_BIN_GLOB} "
                  "(install them: apt-get install postgresql)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)

    as_root = os.geteuid() == 0
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, but there is no `postgres` system user to run PostgreSQL as")
    base = Path(tempfile.mkdtemp(prefix="hector-sync-pg-", dir="/tmp"))
    data, log, pwfile = base / "data", base / "server.log", base / "pwfile"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password + "\n")
    if as_root:
        for path in (base, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *args], cwd=base, capture_output=True, text=True, timeout=timeout)

    port = free_port()
    started = False
    try:
        done = run(str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        done = run(str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log),
                   "-o", options, timeout=90)
        started = True
        assert done.returncode == 0, f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{read(log)}"
        yield Postgres("127.0.0.1", port, PG_USER, password)
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w")
        shutil.rmtree(base, ignore_errors=True)


def read(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def test_the_server_insists_on_the_password(postgres: Postgres) -> None:
    """So the runs below found PostgreSQL through DAGSTER_PG_PASSWORD, not through trust."""
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                         password="not-" + postgres.password, dbname="postgres", connect_timeout=5)


# --- the deploy instance ---------------------------------------------------------------------


def deploy_home(path: Path, text: str | None = None) -> Path:
    """A fresh DAGSTER_HOME holding deploy/dagster.yaml (or `text`, a variant of it)."""
    path.mkdir()
    if text is None:
        shutil.copyfile(DEPLOY_INSTANCE, path / "dagster.yaml")
    else:
        (path / "dagster.yaml").write_text(text)
    return path


def rows(pg: Postgres, db: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = pg.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_deploy_file_holds_no_secret_and_reads_every_connection_value_from_env() -> None:
    instance = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    db = instance["storage"]["postgres"]["postgres_db"]
    assert db == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USERNAME"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}, "scheme": "postgresql+psycopg2",
    }
    assert instance["telemetry"] == {"enabled": False}
    limits = instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {(limit["key"], limit["value"]) for limit in limits} == set(SYSTEM_TAGS.items())


def test_sync_records_its_run_in_postgres_and_nothing_in_sqlite(
    postgres: Postgres, sims: RunningSimulators, write_config: WriteConfig, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = postgres.new_database("sync")
    home = deploy_home(tmp_path / "prod_home")
    assert (home / "dagster.yaml").read_bytes() == DEPLOY_INSTANCE.read_bytes()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in postgres.env(db).items():
        monkeypatch.setenv(name, value)
    path = write_config(sims.c2_url, sims.hector_url)

    done = hector_sync("--config", str(path), "sync", "--category", "printers")

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert summary_rows(done.stdout)["printers"][0] == "ok", done.stdout

    # the run, straight from PostgreSQL
    (run_id, job, status, partition), *others = rows(
        postgres, db, "SELECT run_id, pipeline_name, status, partition FROM runs")
    assert not others, others
    assert (job, status, partition) == (C2_TO_HECTOR_JOB, "SUCCESS", "printers")
    tags = dict(rows(postgres, db, "SELECT key, value FROM run_tags WHERE run_id = %s", (run_id,)))
    assert tags.get("dagster/partition") == "printers", tags
    assert SYSTEM_TAGS.items() <= tags.items(), tags

    # a materialization of every asset of the job, for printers
    job_assets = {k.to_user_string() for k in
                  build_definitions(str(path)).resolve_job_def(C2_TO_HECTOR_JOB).asset_layer.executable_asset_keys}
    assert job_assets == PRINTERS_ASSETS
    materialized = rows(postgres, db, "SELECT asset_key, partition FROM event_logs "
                        "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'", (run_id,))
    assert {"/".join(json.loads(key)) for key, _ in materialized} == PRINTERS_ASSETS, materialized
    assert {part for _, part in materialized} == {"printers"}, materialized

    # the schedule storage lives in the same database
    tables = {name for (name,) in rows(postgres, db, "SELECT table_name FROM information_schema.tables "
                                                      "WHERE table_schema = 'public'")}
    assert SCHEDULE_TABLES <= tables, tables

    # and no SQLite storage appeared in DAGSTER_HOME
    assert not (home / "history" / "runs.db").exists()
    assert not (home / "storage").exists(), sorted(map(str, (home / "storage").rglob("*")))
    assert not [p for p in home.rglob("*") if p.suffix in (".db", ".sqlite")], sorted(map(str, home.rglob("*")))

    # Dagster itself reads the same instance: PostgreSQL, the queue and its limits per system
    with dg.DagsterInstance.get() as instance:
        assert [r.run_id for r in instance.get_runs()] == [run_id]
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = coordinator.get_run_queue_config()
        configured = yaml.safe_load(DEPLOY_INSTANCE.read_text())["run_coordinator"]["config"]
        assert queue.max_concurrent_runs == configured["max_concurrent_runs"]
        assert list(queue.tag_concurrency_limits) == configured["tag_concurrency_limits"]
        assert {limit["key"] for limit in queue.tag_concurrency_limits} == {C2_ITSM_TAG, HECTOR_TAG}


def test_queued_runs_respect_the_c2_itsm_limit(
    postgres: Postgres, write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two categories queued at once, C2 ITSM limited to one run: one daemon tick launches one.

    The variant instance differs from deploy/dagster.yaml in the C2 ITSM limit (1) and in a run
    launcher that only records what it is asked to launch, so nothing runs for real."""
    db = postgres.new_database("queue")
    variant = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    limits = variant["run_coordinator"]["config"]["tag_concurrency_limits"]
    (c2_limit,) = [limit for limit in limits if limit["key"] == C2_ITSM_TAG]
    c2_limit["limit"] = 1
    assert variant["run_coordinator"]["config"]["max_concurrent_runs"] >= 2
    assert all(limit["limit"] >= 2 for limit in limits if limit["key"] != C2_ITSM_TAG)
    variant["run_launcher"] = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
    home = deploy_home(tmp_path / "queue_home", yaml.safe_dump(variant, sort_keys=False))
    for name, value in postgres.env(db).items():
        monkeypatch.setenv(name, value)
    path = write_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    job_def = build_definitions(str(path)).resolve_job_def(C2_TO_HECTOR_JOB)

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="hector_sync.definitions",
                             working_directory=str(ROOT)),
        location_name="hector_sync",
    )
    with dg.DagsterInstance.from_config(str(home)) as instance, \
            WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as workspace:
        request = workspace.create_request_context()
        location = request.get_code_location("hector_sync")
        (repo,) = location.get_repositories().values()
        remote_job = repo.get_full_job(C2_TO_HECTOR_JOB)
        assert SYSTEM_TAGS.items() <= remote_job.run_tags.items(), remote_job.run_tags

        run_ids = []
        for key in ("printers", "laptops"):
            run = instance.create_run_for_job(
                job_def, tags={**remote_job.run_tags, "dagster/partition": key},
                status=DagsterRunStatus.NOT_STARTED,
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            instance.submit_run(run.run_id, request)
            run_ids.append(run.run_id)

        def statuses() -> list[str]:
            found = dict(rows(postgres, db, "SELECT run_id, status FROM runs"))
            return sorted(found[run_id] for run_id in run_ids)

        assert statuses() == ["QUEUED", "QUEUED"]
        with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
            list(daemon.run_iteration(workspace))
            assert statuses() == ["QUEUED", "STARTING"]
            list(daemon.run_iteration(workspace))  # the first still holds the C2 ITSM slot
            assert statuses() == ["QUEUED", "STARTING"]
        assert sum(instance.run_launcher.did_run_launch(run_id) for run_id in run_ids) == 1
