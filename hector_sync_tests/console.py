"""The console script as an operator runs it: one command and its output, the summary table of
`hector-sync sync`, and `hector-sync demo --ui` in its own folder and process group, with
nothing of it left afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from hector_sync.demo import DEMO_COPY_NAME, DEMO_FOLDER
from hector_sync_tests.conftest import default_signals

HECTOR_SYNC = str(Path(sys.executable).with_name("hector-sync"))
FREE_PORTS = ("--port", "0", "--c2-port", "0", "--hector-port", "0")  # never the ports a real demo takes


def hector_sync(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """One command, in the test's (monkeypatched) environment with `env` on top."""
    return subprocess.run([HECTOR_SYNC, *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ | (env or {}), cwd=cwd, check=False)


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table of `hector-sync sync`: category (and "category direction", as a
    per_field category has a row per direction) → [status, created, updated, ...]."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.split()[:3] == ["category", "direction", "status"]), None)
    assert start is not None, f"no summary table in:\n{stdout}"
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        key, direction, *rest = line.split()
        rows[key] = rest
        rows[f"{key} {direction}"] = rest
    return rows


@dataclass(frozen=True)
class DemoUi:
    """A running `hector-sync demo --ui`: the URLs it printed, where it runs, what it printed."""

    url: str  # the Dagster UI
    c2_url: str
    hector_url: str
    folder: Path  # where it runs: the demo's DuckDB file and Dagster instance are under it
    log: Path  # everything the demo printed: its summary, then dagster dev's output

    @property
    def config(self) -> Path:
        """The configuration the demo runs: the embedded one with its simulators' URLs."""
        return self.folder / DEMO_FOLDER / DEMO_COPY_NAME

    def printed(self) -> str:
        return self.log.read_text()


def printed_url(printed: str, label: str) -> str | None:
    """The URL on the line the demo begins with `label`, once it printed it."""
    found = re.search(rf"^{re.escape(label)}\s+(http://\S+)", printed, re.M)
    return found[1] if found else None


@contextmanager
def demo_ui(folder: Path, options: Sequence[str] = FREE_PORTS, timeout: float = 120) -> Iterator[DemoUi]:
    """The demo run in `folder` (its DuckDB file and Dagster instance land there) with these
    options, serving the UI on the port it printed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTER_HOME", "HECTOR_SYNC_CONFIG") and not k.startswith("HECTOR_SYNC_DEMO_")}
    log = folder / "demo.out"
    with log.open("w") as out:
        proc = subprocess.Popen([HECTOR_SYNC, "demo", "--ui", *options], cwd=folder,
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + timeout
        while True:
            printed = log.read_text()
            assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{printed[-4000:]}"
            assert time.monotonic() < deadline, f"no UI after {timeout} s:\n{printed[-4000:]}"
            url = printed_url(printed, "Dagster UI on")
            try:
                if url and requests.get(url + "/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        c2_url, hector_url = (printed_url(printed, label) for label in ("C2 ITSM simulator:", "Hector simulator:"))
        assert url and c2_url and hector_url, printed[-4000:]
        yield DemoUi(url, c2_url, hector_url, folder, log)
    finally:
        stop_group(proc)


def wait_for_run(demo: DemoUi, run_id: str, timeout: float = 120) -> str:
    """The run's final status, asked of the UI's own GraphQL endpoint."""
    query = {"query": "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
             "variables": {"id": run_id}}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.post(demo.url + "/graphql", json=query, timeout=10).json()["data"]["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    return f"still running after {timeout} s"


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the demo's process group, SIGKILL after a grace; then nothing of it is left."""
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while True:  # the children (dagster dev's webserver, daemon, code server) too
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail("processes of the demo outlived SIGTERM by 20 s")
        time.sleep(0.2)
