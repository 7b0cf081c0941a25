"""What an operator sees of a long read or writeback, and of `--help`.

- The reporter alone, on a fake clock: its lines say done/total, pages, rate and time left; they
  come at most once per interval, and a final line closes every piece of work.
- `hector-sync sync` as a subprocess against both simulators, with C2 ITSM slowed a little so
  its three pages take time: the progress of the C2 read and of the writebacks is on the
  terminal (stderr) and, line for line, in the Dagster run's event log.
- `hector-sync plan` keeps stdout for the plan and puts its progress on stderr.
- Every command's `--help` says what it does and shows an example.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import polars as pl
import pytest
import requests

from hector_sync.config import Direction, load_config
from hector_sync.plans import Plan
from hector_sync.progress import INTERVAL_ENV, INTERVAL_S, Progress, default_interval, duration
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync.store import Store
from hector_sync.writeback.base import Row, Writeback
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.console import HECTOR_SYNC, hector_sync
from hector_sync_tests.systems import PHONES, seed_phones

PRINTERS = 1100  # three C2 pages of 500 (the client's page size), and 1,100 asset creates
COMMANDS = ["demo", "discover", "validate", "plan", "sync", "simulate", "held", "link", "unlink"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- 1. The reporter on a fake clock --------------------------------------------------------


def read_of_a_million(lines: list[str], clock: FakeClock, pages: int, *, interval_s: float = 5.0) -> Progress:
    """A read of 1,000,000 CIs in pages of 500 at 5,000 CIs/s: a page every 0.1 s."""
    progress = Progress("printers: C2 CIs read", lines.append, pages=True, interval_s=interval_s, clock=clock)
    start = clock.now
    for page in range(1, pages + 1):
        clock.now = start + page / 10
        progress.expect(1_000_000, 2000)
        progress.advance(500, pages=1)
    return progress


def test_a_line_says_pages_done_of_total_rate_and_time_left() -> None:
    lines: list[str] = []
    read_of_a_million(lines, FakeClock(), 60)

    assert lines == [
        "printers: C2 CIs read: page 50/2000, 25,000 of 1,000,000 (5,000/s), about 3 min 15 s left",
    ], "one line after 5 s (page 50), none before it nor in the second after"


def test_lines_are_throttled_by_time_and_a_final_line_closes_the_read() -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = read_of_a_million(lines, clock, 2000)
    progress.finish()

    # 200 s of reading at one line per 5 s: 40 lines, then the final one; not a line per page.
    assert len(lines) == 41
    assert lines[1] == "printers: C2 CIs read: page 100/2000, 50,000 of 1,000,000 (5,000/s), about 3 min 10 s left"
    assert lines[-2] == "printers: C2 CIs read: page 2000/2000, 1,000,000 of 1,000,000 (5,000/s)", \
        "nothing is left: no time left"
    assert lines[-1] == "printers: C2 CIs read: done, 2000 pages, 1,000,000 of 1,000,000 in 3 min 20 s (5,000/s)"
    progress.finish()
    assert len(lines) == 41, "the final line comes once"


def test_a_small_read_logs_only_its_final_line() -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = Progress("printers: C2 CIs read", lines.append, pages=True, interval_s=5.0, clock=clock)
    clock.now += 0.4
    progress.expect(40, 1)
    progress.advance(40, pages=1)
    progress.finish()

    assert lines == ["printers: C2 CIs read: done, 1 page, 40 of 40 in 0.4 s (100/s)"]


def test_without_a_total_or_before_anything_is_done_there_is_no_time_left() -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = Progress("laptops: Hector writes", lines.append, interval_s=1.0, clock=clock)
    clock.now += 2
    progress.advance(0)
    clock.now += 2
    progress.advance(30)
    progress.expect(100)
    clock.now += 2
    progress.advance(30)
    progress.finish(ok=False)

    assert lines == [
        "laptops: Hector writes: 0 (0.0/s)",
        "laptops: Hector writes: 30 (7.5/s)",
        "laptops: Hector writes: 60 of 100 (10/s), about 4 s left",
        "laptops: Hector writes: stopped, 60 of 100 in 6.0 s (10/s)",
    ]


def test_durations_read_as_a_person_says_them() -> None:
    assert [duration(s) for s in (0.04, 9.96, 12.4, 189, 3600 + 5 * 60 + 20)] == [
        "0.0 s", "10 s", "12 s", "3 min 9 s", "1 h 5 min",
    ]


def test_the_interval_is_five_seconds_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert default_interval() == INTERVAL_S == 5.0
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert default_interval() == 0.5
    for wrong in ("soon", "-1", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, wrong)
        assert default_interval() == INTERVAL_S


def test_writers_in_many_threads_count_every_call_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`Writeback.each` runs calls on 8 threads: every call is counted, lines stay whole."""

    lines: list[str] = []

    class Counting(Writeback):
        def planned_calls(self, changes: pl.DataFrame) -> int:
            return changes.height

        def write_all(self, changes: pl.DataFrame) -> None:
            def work(item: str, rows: list[Row]) -> None:
                time.sleep(0.001)

            self.each(((str(i), [{"action": "update_asset", "item": str(i)}]) for i in range(changes.height)), work)

        def flush(self) -> None:  # nothing recorded, nothing to store
            pass

    plan: Any = SimpleNamespace(key="printers")
    now = datetime.now(UTC)
    applying = Plan(plan_id="printers.hector.test", kind="sync", category_key="printers", direction=Direction.C2_TO_HECTOR,
                    run_id=None, planned_at=now, c2_read_run_id=None, c2_read_at=now, hector_read_run_id=None,
                    hector_read_at=now)
    writer = Counting(store=Store(tmp_path / "sync.duckdb"), plan=plan, applying=applying, run_id=None,
                      log=lines.append, what="Hector writes")
    monkeypatch.setenv(INTERVAL_ENV, "0")  # a line per call: 8 threads logging at once
    writer.run(pl.DataFrame({"item": range(600)}))

    assert writer.calls_done is not None and writer.calls_done.done == 600
    assert lines[-1].startswith("printers: Hector writes: done, 600 of 600 in "), lines[-1]
    assert all(re.fullmatch(r"printers: Hector writes: .*\(\S+/s\).*", line) for line in lines), lines
    counted = [int(re.match(r"printers: Hector writes: ([\d,]+) of", line)[1].replace(",", "")) for line in lines[:-1]]
    assert counted == list(range(1, 601)), "every call has its line, in order"


def test_a_progress_shared_by_threads_loses_no_step() -> None:
    lines: list[str] = []
    progress = Progress("printers: C2 writes", lines.append, total=8000, interval_s=0.0)

    def step() -> None:
        for _ in range(1000):
            progress.advance()

    threads = [threading.Thread(target=step) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    progress.finish()

    assert progress.done == 8000
    assert len(lines) == 8001
    assert lines[-1].startswith("printers: C2 writes: done, 8,000 of 8,000 in ")


# --- 2. The progress of a real sync, on the terminal and in the Dagster run log ------------


@pytest.fixture
def big_printers() -> Iterator[RunningSimulators]:
    """1,100 printers (three C2 pages), no phones in C2, a few of everything else."""
    with start_simulators(size=10, sizes={"Printers": PRINTERS, "Phones": 0}) as running:
        yield running


def hector_sync_every(every: float, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script with a progress line every `every` seconds."""
    return hector_sync(*args, timeout=180, env={INTERVAL_ENV: str(every)})


def run_log(home: Path) -> list[str]:
    """The messages of every run in the Dagster instance at `home`, oldest first."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [entry.user_message for run in reversed(instance.get_runs()) for entry in instance.all_logs(run.run_id)]


def progress_lines(text: str, what: str) -> list[str]:
    """The progress lines of `what`, from the category key on (the logger's prefix dropped)."""
    return [line[line.index(what):] for line in text.splitlines() if what in line]


def final_count(writes: list[str]) -> int:
    """The calls the final line of a writeback says it made."""
    return int(re.search(r"done, ([\d,]+) of", writes[-1])[1].replace(",", ""))


NUMBER = r"[\d,]+"
RATE = r"\([\d,.]+/s\)"
LEFT = r"about (\d+ h )?(\d+ min )?\d+ s left"


def test_sync_shows_read_and_writeback_progress_on_the_terminal_and_in_the_run_log(
    big_printers: RunningSimulators, write_config: WriteConfig, sync_env: Path,
) -> None:
    path = write_config(big_printers.c2_url, big_printers.hector_url)
    # Each C2 call takes a quarter second: the three pages arrive over about a second.
    requests.put(f"{big_printers.c2_url}/_sim/faults", json={"latency_s": 0.25}, timeout=5).raise_for_status()

    done = hector_sync_every(0.2, "--config", str(path), "sync", "--category", "printers", "--full")

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    read = progress_lines(done.stderr, "printers: C2 CIs read:")
    assert any(re.fullmatch(rf"printers: C2 CIs read: page [12]/3, {NUMBER} of 1,100 {RATE}, {LEFT}", line)
               for line in read), done.stderr[-3000:]
    assert read[-1].startswith("printers: C2 CIs read: done, 3 pages, 1,100 of 1,100 in "), read
    assert re.search(RATE + "$", read[-1]), read[-1]

    writes = progress_lines(done.stderr, "printers: Hector writes:")
    final = re.fullmatch(rf"printers: Hector writes: done, ({NUMBER}) of ({NUMBER}) in .* {RATE}", writes[-1])
    assert final and final[1] == final[2] and final_count(writes) > 1000, writes[-1:]
    assert any(re.fullmatch(rf"printers: Hector writes: {NUMBER} of {final[2]} {RATE}, {LEFT}", line)
               for line in writes), writes
    assert len(writes) < final_count(writes) / 10, "throttled: not a line per call"
    assert progress_lines(done.stderr, "printers: Hector assets read: done, ")
    assert "C2 CIs read" not in done.stdout, "stdout keeps the summary table"

    logged = run_log(sync_env)
    for line in read + writes:
        assert line in logged, f"not in the Dagster run log: {line}"


def test_c2_writeback_progress_reaches_the_terminal(write_config: WriteConfig, big_printers: RunningSimulators) -> None:
    config = load_config(write_config(big_printers.c2_url, big_printers.hector_url,
                                      edit=lambda data: data.update(categories=[PHONES])))
    seed_phones(config, 30)

    done = hector_sync_every(0, "--config", str(config.source), "sync", "--category", "phones")

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    writes = progress_lines(done.stderr, "phones: C2 writes:")
    assert re.fullmatch(rf"phones: C2 writes: 1 of 30 {RATE}, {LEFT}", writes[0]), writes
    assert len(writes) == 31 and writes[-1].startswith("phones: C2 writes: done, 30 of 30 in "), writes


def test_plan_prints_the_plan_on_stdout_and_its_progress_on_stderr(
    write_config: WriteConfig, big_printers: RunningSimulators,
) -> None:
    path = write_config(big_printers.c2_url, big_printers.hector_url)

    done = hector_sync_every(5, "--config", str(path), "plan", "--category", "printers", "--full")

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "printers (c2_to_hector):" in done.stdout and "create_asset" in done.stdout
    assert "C2 CIs read" not in done.stdout
    read = progress_lines(done.stderr, "printers: C2 CIs read:")
    assert read and read[-1].startswith("printers: C2 CIs read: done, 3 pages, 1,100 of 1,100 in "), done.stderr
    assert "printers: Hector assets read: done, " in done.stderr


# --- 3. Help -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["hector-sync", *COMMANDS])
def test_help_says_what_a_command_does_with_an_example(command: list[str]) -> None:
    shown = subprocess.run([HECTOR_SYNC, *command, "--help"], check=False, capture_output=True, text=True, timeout=60)

    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "example" in text.lower()
    examples = text[text.lower().index("example"):]
    name = command[0] if command else ""
    assert re.search(rf"^  hector-sync .*{name}", examples, re.MULTILINE), "an example of this very command"
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 8, f"no description of what it does:\n{text}"


def test_top_level_help_gives_the_exit_statuses() -> None:
    text = subprocess.run([HECTOR_SYNC, "--help"], check=False, capture_output=True, text=True, timeout=60).stdout
    statuses = text[text.index("exit status:"):]
    for status in ("0  all went well", "1  a category failed", "2  the configuration or the command line is wrong"):
        assert status in statuses
    for flag in ("--category", "--full", "--allow-large-change", "--write-config"):
        assert flag in text, flag
