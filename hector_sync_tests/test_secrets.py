"""No secret leaves the process: not in a log line, DuckDB, Dagster's storage, the run
configuration Dagster shows, or the failure e-mail (docs/sync-rules.md); and TLS
verification is on unless the configuration turns it off explicitly, which is logged loudly.

The leak test runs `hector-sync` for real, as a subprocess against the bundled simulators on
loopback, with known secret values: a full sync that succeeds, then a sync that C2 ITSM refuses
(a wrong password) and one that Hector refuses (a wrong API key), each of which e-mails the
operator through a real SMTP server. Python logging is at DEBUG on stderr (urllib3 included), and
Dagster also stores those records in its event log (managed python loggers), so the scan sees
every line the code logs. It then looks for every secret value (the demo password and API key,
both wrong values, and every C2 bearer token the simulator issued), as UTF-8, UTF-16, URL-quoted
and base64 (a Bearer or Basic header), case-insensitively, in:

- the stdout and stderr of each run;
- every file the runs left in the test folder, as bytes: the DuckDB file and its siblings, and
  all of DAGSTER_HOME (run, event-log, index and schedule SQLite databases, compute logs);
- every value of every SQLite table, zlib-inflated where Dagster compresses (its snapshots);
- every row of every DuckDB table, read through DuckDB (its strings are compressed on disk);
- each Dagster run as the instance returns it (run config, tags), its job and execution-plan
  snapshots (what the UI's launchpad and run pages show), and every event-log record;
- each e-mail, raw and decoded.

Each place is also checked to hold what it should, so that an empty scan cannot pass.

A secret read from the environment is checked (section 3): a value with a newline at its end, as
`kubectl create secret --from-file` leaves it, works; one with a line break inside (a header
injection) is refused naming its variable, and the refused value shows nowhere: not in the output
of `hector-sync sync`, the Dagster event log, or the failure e-mail.

Already covered elsewhere and not repeated here: the loader's default `verify_tls: true`
(test_config.py::test_spec_example_loads_as_written) and the client constructor's warning with
`verify_tls=False` (test_clients.py::test_tls_verification_off_is_logged_loudly). Added here: a
real HTTPS server with an untrusted certificate, refused by clients built from a configuration
without `verify_tls`, and reached, with a warning, only with `verify_tls: false`; the same through
`hector-sync sync`, whose stderr shows the warning; and `verify_tls: false` meaning what its
warning says even when the host sets REQUESTS_CA_BUNDLE.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
import pytest
import requests
import uvicorn
from fastapi import FastAPI

from hector_sync.c2 import C2Client
from hector_sync.config import load_config
from hector_sync.demo import (
    DEMO_C2_PASSWORD,
    DEMO_C2_READONLY_PASSWORD,
    DEMO_C2_USERNAME,
    DEMO_ENV,
    DEMO_HECTOR_API_KEY,
    DEMO_SEED,
)
from hector_sync.errors import Unavailable
from hector_sync.hector import HectorClient
from hector_sync.simulators.c2_app import C2State, create_c2_app
from hector_sync.simulators.hector_app import HectorState, create_hector_app
from hector_sync.simulators.sample_data import SampleData
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import Mail, Mailbox, WriteConfig

SIZE = 40  # CIs per category: every messy record of the sample data, quick to sync
FLOWING = ["printers", "laptops", "monitors"]  # direction c2_to_hector in the demo
C2_PASSWORD_VAR = next(name for name, value in DEMO_ENV.items() if value == DEMO_C2_PASSWORD)
HECTOR_KEY_VAR = next(name for name, value in DEMO_ENV.items() if value == DEMO_HECTOR_API_KEY)
WRONG_C2_PASSWORD = "Wr0ng-Secret-5f3a9"
WRONG_HECTOR_KEY = "Wr0ng-Hector-Key-8c21d"
KNOWN_SECRETS = {
    "the demo C2 password": DEMO_C2_PASSWORD,
    "the demo C2 read-only password": DEMO_C2_READONLY_PASSWORD,
    "the demo Hector API key": DEMO_HECTOR_API_KEY,
    "the wrong C2 password": WRONG_C2_PASSWORD,
    "the wrong Hector API key": WRONG_HECTOR_KEY,
}
# The console script's own entry point, with every Python logger at DEBUG on stderr.
VERBOSE_CLI = (
    "import logging, sys; "
    "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, "
    "format='%(levelname)s %(name)s: %(message)s'); "
    "from hector_sync.cli import main; main()"
)
# Dagster keeps these loggers' records, DEBUG included, in the run's event log.
VERBOSE_DAGSTER_YAML = """\
telemetry:
  enabled: false
python_logs:
  python_log_level: DEBUG
  managed_python_loggers: [hector_sync, urllib3, requests]
"""
TLS_OFF = "TLS certificate verification is OFF"
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # requests' per-request `verify` default


# --- The scanner ----------------------------------------------------------------------------


def leak_forms(name: str, secret: str) -> dict[str, bytes]:
    """The byte strings that would betray `secret`, lower-cased, keyed by a description."""

    def whole_groups(data: bytes) -> bytes:
        """base64 up to the last full group: what stays the same inside a longer encoding."""
        return base64.b64encode(data)[: len(data) // 3 * 4]

    forms = {
        f"{name} (UTF-8)": secret.encode(),
        f"{name} (UTF-16-LE)": secret.encode("utf-16-le"),
        f"{name} (UTF-16-BE)": secret.encode("utf-16-be"),
        f"{name} (URL-quoted)": quote(secret, safe="").encode(),
        f"{name} (base64)": whole_groups(secret.encode()),
        f"{name} (Basic auth, base64)": whole_groups(f"{DEMO_C2_USERNAME}:{secret}".encode()),
    }
    return {what: needle.lower() for what, needle in forms.items()}


@dataclass
class SecretScan:
    """Looks for every form of every secret in what it is given and remembers where it looked."""

    secrets: dict[str, str]
    places: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert all(len(value) >= 8 for value in self.secrets.values()), "too short to scan for"
        self.forms: dict[str, bytes] = {}
        for name, value in self.secrets.items():
            for what, needle in leak_forms(name, value).items():
                if needle not in self.forms.values():  # e.g. URL-quoting changes nothing
                    self.forms[what] = needle

    def check(self, where: str, data: bytes | str) -> None:
        """Record every secret form that occurs in `data`, naming `where`."""
        blob = (data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data).lower()
        self.places.append(where)
        for what, needle in self.forms.items():
            if needle in blob:
                at = blob.index(needle)
                context = blob[max(0, at - 120): at + len(needle) + 60].decode("utf-8", "replace")
                self.found.append(f"{what} in {where}: ...{context}...")

    def assert_clean(self) -> None:
        assert not self.found, "secrets leaked:\n" + "\n".join(self.found)


def scan_files(scan: SecretScan, folder: Path) -> list[Path]:
    """Every file below `folder` as bytes; SQLite databases value by value too. Returns them."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        raw = path.read_bytes()
        scan.check(f"file {path.relative_to(folder)}", raw)
        if raw.startswith(b"SQLite format 3\x00"):
            scan_sqlite(scan, path, folder)
    return files


def scan_sqlite(scan: SecretScan, path: Path, folder: Path) -> None:
    """Each table of a SQLite file as text, its compressed blobs (Dagster snapshots) inflated."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            parts: list[bytes] = []
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        parts.append(value)
                        try:
                            parts.append(zlib.decompress(value))
                        except zlib.error:
                            pass
                    else:
                        parts.append(str(value).encode())
            scan.check(f"SQLite table {table} of {path.relative_to(folder)}", b"\n".join(parts))
    finally:
        con.close()


def duckdb_text(path: Path) -> str:
    """Every row of every DuckDB table, as text (strings are compressed in the file itself)."""
    lines = []
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2").fetchall()
        for schema, table in tables:
            for row in con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall():
                lines.append(f"{schema}.{table}: {row!r}")
    return "\n".join(lines)


# --- Running the console script -------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`hector-sync ARGS` with DEBUG logging, in the test's environment plus `env`."""
    return subprocess.run([sys.executable, "-c", VERBOSE_CLI, *args], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def summary_status(stdout: str) -> dict[str, str]:
    """category → status column of the summary table `hector-sync sync` prints."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["category", "direction", "status"])
    statuses = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        key, _direction, status, *_ = line.split()
        statuses[key] = status
    return statuses


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    """Fresh small simulators for this test: the sync writes to Hector and C2 issues tokens."""
    with start_simulators(size=SIZE) as running:
        yield running


# --- 1. No secret anywhere ------------------------------------------------------------------


def test_the_scan_finds_every_form_and_names_the_place(tmp_path: Path) -> None:
    """The scanner itself: a planted secret is found in each form it looks for, and named."""
    secret = WRONG_C2_PASSWORD
    basic = base64.b64encode(f"{DEMO_C2_USERNAME}:{secret}".encode()).decode()
    planted = {
        "plain": f"password={secret}",
        "upper-case": f"PASSWORD={secret.upper()}",
        "utf-16": f"x{secret}y".encode("utf-16-le"),
        "bearer": f"Authorization: Bearer {base64.b64encode(secret.encode()).decode()}",
        "basic": f"Authorization: Basic {basic}",
        "url": f"?password={quote(secret + '/+', safe='')}",
    }
    scan = SecretScan({"the wrong C2 password": secret})
    for where, data in planted.items():
        scan.check(where, data)
    scan.check("clean", "nothing to see: svc-hector, HECTOR_SYNC_DEMO_C2_PASSWORD, ***")
    assert {line.split(" in ", 1)[1].split(":", 1)[0] for line in scan.found} == set(planted), scan.found

    database = tmp_path / "events.db"  # compressed in SQLite, as Dagster stores its snapshots
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE snapshots (body BLOB)")
        con.execute("INSERT INTO snapshots VALUES (?)", [zlib.compress(f'{{"pw": "{secret}"}}'.encode())])
    con.close()
    scan = SecretScan({"the wrong C2 password": secret})
    scan_files(scan, tmp_path)
    assert [line.split(":", 1)[0] for line in scan.found] == [
        "the wrong C2 password (UTF-8) in SQLite table snapshots of events.db"], scan.found
    with pytest.raises(AssertionError, match="secrets leaked"):
        scan.assert_clean()


def test_no_secret_in_logs_duckdb_dagster_storage_run_config_or_email(
    sims: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox, sync_env: Path,
    tmp_path: Path,
) -> None:
    (sync_env / "dagster.yaml").write_text(VERBOSE_DAGSTER_YAML)
    path = write_config(sims.c2_url, sims.hector_url)
    duckdb_path = tmp_path / "hector_sync.duckdb"

    full = run_cli("--config", str(path), "sync", "--full")
    assert full.returncode == 0, full.stdout + full.stderr[-3000:]
    assert {k: summary_status(full.stdout)[k] for k in FLOWING} == dict.fromkeys(FLOWING, "ok"), full.stdout
    assert mailbox.messages == []

    c2_refuses = run_cli("--config", str(path), "sync", "--category", "printers",
                         env={C2_PASSWORD_VAR: WRONG_C2_PASSWORD})
    assert c2_refuses.returncode == 1, c2_refuses.stdout + c2_refuses.stderr[-3000:]
    assert summary_status(c2_refuses.stdout)["printers"] == "FAILED", c2_refuses.stdout
    hector_refuses = run_cli("--config", str(path), "sync", "--category", "laptops",
                             env={HECTOR_KEY_VAR: WRONG_HECTOR_KEY})
    assert hector_refuses.returncode == 1, hector_refuses.stdout + hector_refuses.stderr[-3000:]
    assert summary_status(hector_refuses.stdout)["laptops"] == "FAILED", hector_refuses.stdout
    mails = mailbox.wait_for(2)
    assert len(mails) == 2, [m.message["Subject"] for m in mails]

    # every bearer token C2 issued to these runs (the simulator's own record of them)
    tokens = {f"C2 bearer token #{i}": token for i, token in enumerate(sims.c2.tokens._tokens)}
    assert tokens, "the C2 simulator issued no token: the sync never logged in"
    scan = SecretScan({**KNOWN_SECRETS, **tokens})

    # -- the log lines: everything each run printed
    runs = {"full sync": full, "sync refused by C2": c2_refuses, "sync refused by Hector": hector_refuses}
    for label, done in runs.items():
        scan.check(f"stdout of the {label}", done.stdout)
        scan.check(f"stderr of the {label}", done.stderr)
    debug = [line for line in full.stderr.splitlines() if line.startswith("DEBUG ")]
    assert any(line.startswith("DEBUG hector_sync.http:") and "C2 ITSM POST /api/v1/auth/login -> 200" in line
               for line in debug), full.stderr[-3000:]
    assert any(line.startswith("DEBUG urllib3.connectionpool:") for line in debug), full.stderr[-3000:]
    assert "rejected the credentials of svc-hector" in c2_refuses.stdout, c2_refuses.stdout
    assert C2_PASSWORD_VAR in c2_refuses.stdout, c2_refuses.stdout
    assert "rejected the API key" in hector_refuses.stdout, hector_refuses.stdout

    # -- every file left behind: DuckDB and its siblings, all of DAGSTER_HOME
    files = scan_files(scan, tmp_path)
    names = {p.name for p in files}
    assert duckdb_path.name in names and "runs.db" in names and "index.db" in names, names
    assert any(b"printers" in p.read_bytes() for p in files if p.suffix == ".db"), "Dagster stored no partition"

    # -- DuckDB, through DuckDB
    rows = duckdb_text(duckdb_path)
    scan.check("the DuckDB tables", rows)
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        for key in FLOWING:
            cis, = con.execute("SELECT count(*) FROM c2_ci WHERE category_key = ?", [key]).fetchone()
            assert cis == SIZE, (key, cis)
        history, = con.execute("SELECT count(*) FROM change_history").fetchone()
        assert history > 0

    # -- Dagster: runs, their run config and tags, snapshots, event logs
    with dg.DagsterInstance.from_config(str(sync_env)) as instance:
        dagster_runs = instance.get_runs()
        statuses = sorted((run.tags.get("dagster/partition"), run.status.value) for run in dagster_runs)
        assert statuses == sorted([*((k, "SUCCESS") for k in FLOWING),
                                   ("printers", "FAILURE"), ("laptops", "FAILURE")]), statuses
        events_text = []
        for run in dagster_runs:
            where = f"Dagster run {run.run_id} ({run.tags.get('dagster/partition')}, {run.status.value})"
            scan.check(f"run config of {where}", repr(run.run_config) + "\n" + dg.serialize_value(run.run_config))
            scan.check(f"tags of {where}", repr(run.tags))
            scan.check(f"{where} as stored", dg.serialize_value(run))
            scan.check(f"job snapshot of {where}",
                       dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
            scan.check(f"execution plan snapshot of {where}",
                       dg.serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)))
            records = instance.all_logs(run.run_id)
            text = "\n".join(dg.serialize_value(record) for record in records)
            scan.check(f"event log of {where}", text)
            events_text.append(text)
        events = "\n".join(events_text)
    assert "c2_cmdb_snapshot" in events and "hector_writeback" in events
    assert "POST /api/v1/auth/login" in events, "the managed python loggers' records are not in the event log"
    assert "rejected the credentials of svc-hector" in events and "rejected the API key" in events

    # -- the e-mails
    by_category = {m.message["Subject"].split("'")[1]: m for m in mails}
    assert set(by_category) == {"printers", "laptops"}, list(by_category)
    for category, mail in by_category.items():
        scan.check(f"raw e-mail about {category}", mail.raw)
        scan.check(f"body of the e-mail about {category}", mail.message["Subject"] + "\n" + mail.body)
    mail_says(by_category["printers"], "printers", "C2 ITSM rejected the credentials of svc-hector",
              f"check the password in {C2_PASSWORD_VAR}")
    mail_says(by_category["laptops"], "laptops", "Hector rejected the API key",
              f"check the key in {HECTOR_KEY_VAR}")

    assert len(scan.places) > 30, scan.places
    scan.assert_clean()


def mail_says(mail: Mail, category: str, *words: str) -> None:
    """The failure e-mail names the category and says what went wrong in words."""
    body = mail.body
    assert f"Category: {category}" in body, body
    for word in words:
        assert word in body, f"'{word}' is not in the e-mail:\n{body}"
    assert "***" not in body, f"a secret reached the report and had to be masked:\n{body}"


# --- 2. TLS: verified by default, off only on purpose and loudly -----------------------------


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no trust store knows, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def serve_https(app: FastAPI, cert: Path, key: Path) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Serve `app` over HTTPS on a free loopback port; its URL, once it accepts connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key), log_config=None,
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the HTTPS simulator did not start"
        time.sleep(0.01)
    return f"https://127.0.0.1:{sock.getsockname()[1]}", server, thread


@contextmanager
def https_simulators(folder: Path) -> Iterator[tuple[str, str]]:
    """Both simulators behind an untrusted (self-signed) certificate: (c2_url, hector_url)."""
    cert, key = self_signed_certificate(folder)
    data = SampleData(DEMO_SEED, SIZE)
    served = [serve_https(create_c2_app(C2State(data)), cert, key),
              serve_https(create_hector_app(HectorState(data)), cert, key)]
    try:
        yield served[0][0], served[1][0]
    finally:
        for _, server, _ in served:
            server.should_exit = True
        for _, _, thread in served:
            thread.join(timeout=30)


@pytest.fixture
def no_ca_bundle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests reads a CA bundle from these variables; the tests below choose, not the host."""
    for name in CA_BUNDLE_VARS:
        monkeypatch.delenv(name, raising=False)


def tls_off(data: dict) -> None:
    """The explicit setting: verify_tls: false for both systems."""
    data["c2"]["verify_tls"] = False
    data["hector"]["verify_tls"] = False


def test_clients_from_the_configuration_verify_tls_unless_it_is_turned_off(
    write_config: WriteConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture, no_ca_bundle_env: None,
) -> None:
    with https_simulators(tmp_path) as (c2_url, hector_url), \
            caplog.at_level(logging.WARNING, logger="hector_sync.http"):
        config = load_config(write_config(c2_url, hector_url))  # no verify_tls: the default
        c2, hector = C2Client.from_settings(config.c2), HectorClient.from_settings(config.hector)
        with c2, hector:
            assert c2.verify_tls is hector.verify_tls is True
            for call in (c2.list_cmdbs, hector.list_stockrooms):
                with pytest.raises(Unavailable, match="TLS handshake with 127.0.0.1:[0-9]+ failed"):
                    call()
        assert not [r for r in caplog.records if TLS_OFF in r.getMessage()]

        config = load_config(write_config(c2_url, hector_url, edit=tls_off, name="insecure.yaml"))
        c2, hector = C2Client.from_settings(config.c2), HectorClient.from_settings(config.hector)
        with c2, hector:
            assert c2.verify_tls is hector.verify_tls is False
            assert [cmdb.name for cmdb in c2.list_cmdbs()]  # the untrusted server is reached
            assert len(hector.list_stockrooms()) == 3
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and TLS_OFF in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert f"for C2 ITSM at {c2_url}" in warnings[0] and f"for Hector at {hector_url}" in warnings[1], warnings


def test_cli_sync_refuses_an_untrusted_certificate_and_warns_when_verification_is_off(
    write_config: WriteConfig, mailbox: Mailbox, tmp_path: Path, no_ca_bundle_env: None,
) -> None:
    with https_simulators(tmp_path) as (c2_url, hector_url):
        default = write_config(c2_url, hector_url)
        refused = run_cli("--config", str(default), "sync", "--category", "printers")
        assert refused.returncode == 1, refused.stdout + refused.stderr[-3000:]
        assert summary_status(refused.stdout)["printers"] == "FAILED", refused.stdout
        assert "certificate" in refused.stdout.split("printers failed", 1)[1], refused.stdout
        assert TLS_OFF not in refused.stderr
        (mail,) = mailbox.wait_for(1)
        mail_says(mail, "printers", "certificate")

        insecure = write_config(c2_url, hector_url, edit=tls_off, name="insecure.yaml")
        reached = run_cli("--config", str(insecure), "sync", "--category", "printers")
        assert reached.returncode == 0, reached.stdout + reached.stderr[-3000:]
        assert summary_status(reached.stdout)["printers"] == "ok", reached.stdout
    loud = [line for line in reached.stderr.splitlines() if TLS_OFF in line]
    assert any(f"for C2 ITSM at {c2_url}" in line for line in loud), reached.stderr[-3000:]
    assert any(f"for Hector at {hector_url}" in line for line in loud), reached.stderr[-3000:]
    assert all("WARNING" in line for line in loud), loud
    assert len(mailbox.messages) == 1

    scan = SecretScan(KNOWN_SECRETS)
    for label, done in {"refused sync": refused, "insecure sync": reached}.items():
        scan.check(f"stdout of the {label}", done.stdout)
        scan.check(f"stderr of the {label}", done.stderr)
    scan.check("the e-mail about the refused certificate", mail.raw)
    scan.assert_clean()


def test_verify_tls_false_is_honoured_when_the_environment_names_a_ca_bundle(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The setting, not the host, decides: with REQUESTS_CA_BUNDLE set (common on servers and in
    containers), `verify_tls: false` still turns verification off, as its warning says.

    requests lets that variable override a Session's `verify = False` on every request (psf/requests
    #3829) unless `verify` is passed per request; then the log would claim OFF while the client
    still verifies (and fails) against the bundle.
    """
    certifi = pytest.importorskip("certifi")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with https_simulators(tmp_path) as (c2_url, hector_url), \
            caplog.at_level(logging.WARNING, logger="hector_sync.http"):
        config = load_config(write_config(c2_url, hector_url))
        with HectorClient.from_settings(config.hector) as hector, \
                pytest.raises(Unavailable, match="TLS handshake"):  # the default: still verified
            hector.list_stockrooms()
        config = load_config(write_config(c2_url, hector_url, edit=tls_off, name="insecure.yaml"))
        c2, hector = C2Client.from_settings(config.c2), HectorClient.from_settings(config.hector)
        with c2, hector:
            assert [r for r in caplog.records if TLS_OFF in r.getMessage()], "no warning"
            try:
                cmdbs, stockrooms = c2.list_cmdbs(), hector.list_stockrooms()
            except Unavailable as refused:
                pytest.fail(f"verify_tls: false was logged as OFF but the client still verified against "
                            f"REQUESTS_CA_BUNDLE: {refused}")
            assert cmdbs and len(stockrooms) == 3


# --- 3. A secret from the environment is checked, and never echoed ----------------------------

EVIL_KEY_HEAD = "Evil-Hector-Key-3e7d1"
EVIL_KEY = f"{EVIL_KEY_HEAD}\r\nX-Evil: 1"  # a second header smuggled into Authorization
REFUSED_KEY = (f"the environment variable {HECTOR_KEY_VAR} holds a line break or another control character "
               "inside its value")


def test_a_secret_with_a_newline_at_its_end_works(
    sims: RunningSimulators, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both secrets as `kubectl create secret --from-file` (or an editor) leaves them in a file."""
    config = load_config(write_config(sims.c2_url, sims.hector_url))
    monkeypatch.setenv(HECTOR_KEY_VAR, f"{DEMO_HECTOR_API_KEY}\n")
    monkeypatch.setenv(C2_PASSWORD_VAR, f"{DEMO_C2_PASSWORD}\r\n")
    c2, hector = C2Client.from_settings(config.c2), HectorClient.from_settings(config.hector)
    with c2, hector:
        assert [cmdb.name for cmdb in c2.list_cmdbs()] == ["Production", "Lab"]
        assert len(hector.list_stockrooms()) == 3


def test_a_secret_with_a_line_break_inside_is_refused_by_name_and_shown_nowhere(
    sims: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox, sync_env: Path,
) -> None:
    (sync_env / "dagster.yaml").write_text(VERBOSE_DAGSTER_YAML)
    path = write_config(sims.c2_url, sims.hector_url)

    done = run_cli("--config", str(path), "sync", "--category", "printers", env={HECTOR_KEY_VAR: EVIL_KEY})

    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert summary_status(done.stdout)["printers"] == "FAILED", done.stdout
    assert REFUSED_KEY in done.stdout, done.stdout
    (mail,) = mailbox.wait_for(1)
    mail_says(mail, "printers", REFUSED_KEY)
    hector_calls = requests.get(f"{sims.hector_url}/_sim/stats", timeout=5).json()["by_method"]
    assert hector_calls == {}, f"Hector was called with the refused key: {hector_calls}"

    scan = SecretScan({"the refused key's first line": EVIL_KEY_HEAD, "the injected header": "X-Evil: 1",
                       "the refused key": EVIL_KEY})
    scan.check("stdout of the sync", done.stdout)
    scan.check("stderr of the sync", done.stderr)
    with dg.DagsterInstance.from_config(str(sync_env)) as instance:
        (run,) = instance.get_runs()
        assert run.status.value == "FAILURE"
        events = "\n".join(dg.serialize_value(record) for record in instance.all_logs(run.run_id))
    # the run's clients are built when it starts: the refusal is its resources' failure
    assert "RESOURCE_INIT_FAILURE" in events and HECTOR_KEY_VAR in events, "the event log holds no refusal to scan"
    scan.check(f"event log of Dagster run {run.run_id}", events)
    scan.check("raw failure e-mail", mail.raw)
    scan.check("failure e-mail", mail.message["Subject"] + "\n" + mail.body)
    scan.assert_clean()
