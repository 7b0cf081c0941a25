"""Bad answers are errors, not data.

A server, or a proxy in front of it, may answer what no page of the contract can be: a body of
many megabytes, or text that is not UTF-8. Either is refused with an error naming the call (and
the item), never read as data; test_complete_reads.py shows a sync refusing the snapshot on
their account. And what either system holds reaches the operator's terminal escaped: a value in
`hector-sync plan` cannot clear the screen or forge a line.

The simulators send the bad answers for real, over HTTP, through their fault switches.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from hector_sync.c2 import C2Client
from hector_sync.demo import DEMO_C2_PASSWORD, DEMO_C2_USERNAME, DEMO_HECTOR_API_KEY
from hector_sync.errors import NotUtf8, UnexpectedAnswer
from hector_sync.hector import HectorClient
from hector_sync.http import MAX_ANSWER_BYTES
from hector_sync.simulators.sample_data import category, ci_id
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.console import hector_sync
from hector_sync_tests.systems import reset


def faults(url: str, **switches: object) -> None:
    requests.put(f"{url}/_sim/faults", json=switches, timeout=5).raise_for_status()


def calls(url: str) -> dict[str, int]:
    return requests.get(f"{url}/_sim/stats", timeout=5).json()["by_route"]


@pytest.fixture
def sims(simulators: RunningSimulators) -> Iterator[RunningSimulators]:
    """The module's simulators, call statistics reset, and every fault off afterwards."""
    reset(simulators.c2_url, simulators.hector_url)
    yield simulators
    faults(simulators.c2_url)
    faults(simulators.hector_url)


@pytest.mark.parametrize(("chunked", "how"), [
    pytest.param(False, "its Content-Length of 67,108,865 bytes is over the 64 MiB an answer may hold, far above "
                 "the contract's largest page; refused unread", id="content-length"),
    pytest.param(True, "its body ran past the 64 MiB an answer may hold, far above the contract's largest page; "
                 "reading stopped there", id="chunked"),
])
def test_an_answer_bigger_than_any_page_is_refused_and_not_asked_again(
    sims: RunningSimulators, chunked: bool, how: str
) -> None:
    printers = category("Printers").id
    faults(sims.c2_url, pad_answer_bytes=MAX_ANSWER_BYTES + 1, chunked_answers=chunked)
    with C2Client(sims.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD) as c2, pytest.raises(UnexpectedAnswer) as big:
        next(c2.iter_ci_pages("cmdb-1", printers))
    assert str(big.value) == (
        f"C2 ITSM gave an answer hector_sync did not expect (GET /api/v1/cmdbs/cmdb-1/cis, 200): {how}")
    assert calls(sims.c2_url)["GET /api/v1/cmdbs/{cmdb_id}/cis"] == 1


def test_an_answer_without_a_content_length_is_read_whole_below_the_cap(sims: RunningSimulators) -> None:
    printers = category("Printers").id
    with C2Client(sims.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD) as c2:
        plain = [ci for page in c2.iter_ci_pages("cmdb-1", printers, page_size=50) for ci in page]
        faults(sims.c2_url, chunked_answers=True, pad_answer_bytes=3 * 2**20)  # 3 chunks of the simulator's
        chunked = [ci for page in c2.iter_ci_pages("cmdb-1", printers, page_size=50) for ci in page]
    assert chunked == plain and len(plain) == 120


def test_a_c2_ci_in_latin1_is_refused_naming_it(sims: RunningSimulators) -> None:
    """Read as requests reads it, the Latin-1 "ü" became U+FFFD, and that name went to Hector."""
    printer = ci_id("Printers", 101)  # on the third page of 50
    with C2Client(sims.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD) as c2:
        current = c2.get_ci(printer)
        assert current is not None
        c2.update_ci(printer, current["version"], name="Drucker Müller")
        faults(sims.c2_url, latin1_items=[printer])
        with pytest.raises(NotUtf8) as refused:
            list(c2.iter_ci_pages("cmdb-1", category("Printers").id, page_size=50))
        with pytest.raises(NotUtf8):
            c2.get_ci(printer)
    assert str(refused.value).startswith(
        f'C2 ITSM answered GET /api/v1/cmdbs/cmdb-1/cis with bytes that are not UTF-8 in item {printer} '
        f'(name "Drucker M\\xfcller") at name = "Drucker M\\xfcller"'), refused.value
    assert str(refused.value).endswith(
        ": fix that text in C2 ITSM, or the encoding of whatever serves its API, then rerun"), refused.value
    assert "\ufffd" not in str(refused.value)


def test_a_hector_asset_in_latin1_is_refused_naming_its_id_title_and_tag(sims: RunningSimulators) -> None:
    with HectorClient(sims.hector_url, DEMO_HECTOR_API_KEY) as hector:
        asset = next(a for page in hector.iter_asset_pages() for a in page)
        hector.update_asset(asset["id"], asset["version"], {"title": "Portable Montréal", "asset_tag": "MTL-É1"})
        faults(sims.hector_url, latin1_items=[str(asset["id"])])
        with pytest.raises(NotUtf8) as refused:
            list(hector.iter_asset_pages(category_id=asset["category_id"]))
    assert str(refused.value) == (
        f'Hector answered GET /api/v1/assets with bytes that are not UTF-8 in item {asset["id"]} '
        '(title "Portable Montr\\xe9al", asset tag "MTL-\\xc91") at title = "Portable Montr\\xe9al", '
        'asset_tag = "MTL-\\xc91": fix that text in Hector, or the encoding of whatever serves its API, then rerun'
    )


def test_plan_prints_control_characters_escaped(write_config: WriteConfig) -> None:
    """A CI name holding a screen clear, a carriage return, a line break and a right-to-left
    override: raw, they would wipe the plan above, overwrite its line, forge a new one and
    reverse what follows. Escaped, the name reads as what it holds."""
    evil = "PRN-1\x1b[2J\rFORGED\nLINE\u202eRTL"
    with start_simulators(size=1) as sims:  # one printer: every row of its plan is printed
        config = write_config(sims.c2_url, sims.hector_url)
        with C2Client(sims.c2_url, DEMO_C2_USERNAME, DEMO_C2_PASSWORD) as c2:
            printer = c2.get_ci(ci_id("Printers", 0))
            assert printer is not None
            c2.update_ci(printer["id"], printer["version"], name=evil)
        planned = hector_sync("--config", str(config), "plan", "--category", "printers")

    assert planned.returncode == 0, planned.stdout + planned.stderr
    for raw in ("\x1b", "\r", "\u202e"):
        assert raw not in planned.stdout, planned.stdout
    assert "PRN-1\\x1b[2J\\rFORGED\\nLINE\\u202eRTL" in planned.stdout, planned.stdout
    assert not any(line.startswith("LINE") for line in planned.stdout.splitlines()), planned.stdout
