"""The ports of `hector-sync demo` and `hector-sync simulate`: a demo started beside another one
(here: listeners the test holds on the default ports) takes free ports, says so, syncs, and its
Dagster UI runs against its own simulators; a busy port given as an option is one line, exit 2."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hector_sync.config import load_config
from hector_sync.demo import DEMO_C2_PORT, DEMO_HECTOR_PORT, DEMO_UI_PORT
from hector_sync_tests.console import demo_ui, hector_sync, summary_rows, wait_for_run
from hector_sync_tests.conftest import free_port

DEFAULTS = {"Dagster UI": DEMO_UI_PORT, "C2 ITSM simulator": DEMO_C2_PORT, "Hector simulator": DEMO_HECTOR_PORT}
SIMULATOR_HOLDER = "another demo or `hector-sync simulate`?"
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


@pytest.fixture
def busy_defaults() -> Iterator[None]:
    """The default ports held by a listener: by this test where free, else by whoever holds
    them already (a real `make demo`, say). Either way a demo cannot take them."""
    held = []
    for port in DEFAULTS.values():
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    try:
        yield
    finally:
        for sock in held:
            sock.close()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def hector_reads(hector_url: str) -> int:
    """How often the Hector simulator listed its categories: every catalog resolution does."""
    return requests.get(f"{hector_url}/_sim/stats", timeout=5).json()["by_route"].get("GET /api/v1/categories", 0)


def test_a_demo_beside_busy_default_ports_takes_free_ones(busy_defaults: None, tmp_path: Path) -> None:
    with demo_ui(tmp_path, options=()) as demo:
        printed = demo.printed()
        urls = {"Dagster UI": demo.url, "C2 ITSM simulator": demo.c2_url, "Hector simulator": demo.hector_url}
        for name, default in DEFAULTS.items():
            taken = port_of(urls[name])
            assert taken != default, printed[-4000:]
            assert re.search(rf"^port {default} is in use \(.*\): the {name} takes port {taken} instead "
                             rf"\(--\S+ chooses one\)$", printed, re.M), printed[:2000]
        rows = summary_rows(printed)
        assert [rows[key][0] for key in ("printers", "laptops", "monitors")] == ["ok"] * 3, printed[-4000:]

        # the configuration it ran, and that other commands are told to use, names its simulators
        assert "hector-sync --config .hector-sync/demo.yaml COMMAND" in printed
        config = load_config(demo.config)
        assert (config.c2.url, config.hector.url) == (demo.c2_url, demo.hector_url)

        # ...and so does the UI's process: a run launched there reads this demo's Hector
        before = hector_reads(demo.hector_url)
        params = {"selector": {"repositoryLocationName": "hector_sync.definitions", "repositoryName": "__repository__",
                               "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["category_catalog"]}]},
                  "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "printers"}]}}
        launched = requests.post(demo.url + "/graphql", json={"query": LAUNCH, "variables": {"params": params}},
                                 timeout=30).json()["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        assert wait_for_run(demo, run_id) == "SUCCESS", demo.printed()[-4000:]
        assert hector_reads(demo.hector_url) > before


@pytest.mark.parametrize(("command", "said"), [
    pytest.param(["demo", "--ui", "--port", str(DEMO_UI_PORT)],
                 f"port {DEMO_UI_PORT} is in use (another demo or Dagster UI?); choose another with --port",
                 id="demo-ui-default-port-given"),
    pytest.param(["demo", "--ui", "--port", "{busy}"], "port {busy} is in use; choose another with --port",
                 id="demo-ui-port"),
    pytest.param(["demo", "--c2-port", str(DEMO_HECTOR_PORT)],
                 f"port {DEMO_HECTOR_PORT} is in use ({SIMULATOR_HOLDER}); choose another with --c2-port",
                 id="demo-c2-port"),
    pytest.param(["demo", "--hector-port", "{busy}"], "port {busy} is in use; choose another with --hector-port",
                 id="demo-hector-port"),
    pytest.param(["demo", "--ui", "--port", "{free}", "--c2-port", "{free}"],
                 "port {free} is the Dagster UI's; choose another with --c2-port", id="one-port-twice"),
    pytest.param(["simulate"], f"port {DEMO_C2_PORT} is in use ({SIMULATOR_HOLDER}); choose another with --c2-port",
                 id="simulate-default"),
    pytest.param(["simulate", "--c2-port", "0", "--hector-port", "{busy}"],
                 "port {busy} is in use; choose another with --hector-port", id="simulate-hector-port"),
])
def test_a_busy_port_is_one_line_and_exit_status_2(
    command: list[str], said: str, busy_defaults: None, busy_port: int, tmp_path: Path,
) -> None:
    """Checked before anything starts: nothing on stdout (no simulator URL, no summary)."""
    ports = {"busy": busy_port, "free": free_port()}
    done = hector_sync(*(arg.format(**ports) for arg in command), timeout=60, cwd=tmp_path)

    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"hector-sync: {said.format(**ports)}\n")
