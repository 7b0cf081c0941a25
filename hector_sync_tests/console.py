"""The console script as an operator runs it: one command and its output, the summary table of
`hector-sync sync`, and `hector-sync demo --ui` in its own folder and process group, with
nothing of it left afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from hector_sync_tests.conftest import default_signals, demo_ports, free_port

HECTOR_SYNC = str(Path(sys.executable).with_name("hector-sync"))


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
    url: str
    folder: Path  # where it runs: the demo's DuckDB file and Dagster instance are under it
    log: Path  # everything the demo printed: its summary, then dagster dev's output

    def printed(self) -> str:
        return self.log.read_text()


@contextmanager
def demo_ui(folder: Path, timeout: float = 120) -> Iterator[DemoUi]:
    """The demo run in `folder` (its DuckDB file and Dagster instance land there), serving the UI."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTER_HOME", "HECTOR_SYNC_CONFIG") and not k.startswith("HECTOR_SYNC_DEMO_")}
    log = folder / "demo.out"
    with demo_ports():  # held until the demo is gone: it listens on the fixed ports
        with log.open("w") as out:
            proc = subprocess.Popen([HECTOR_SYNC, "demo", "--ui", "--port", str(port)], cwd=folder,
                                    stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, preexec_fn=default_signals)
        demo = DemoUi(f"http://127.0.0.1:{port}", folder, log)
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{demo.printed()[-4000:]}"
                assert time.monotonic() < deadline, f"no UI on {demo.url} after {timeout} s:\n{demo.printed()[-4000:]}"
                try:
                    if requests.get(demo.url + "/", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            yield demo
        finally:
            stop_group(proc)


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
