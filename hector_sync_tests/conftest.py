"""Fixtures shared by the test modules."""

from collections.abc import Iterator

import pytest

from hector_sync.simulators.serve import RunningSimulators, start_simulators

SIMULATOR_SIZE = 120  # CIs per category: several pages at page_size 50, yet fast to serve


@pytest.fixture(scope="module")
def simulators() -> Iterator[RunningSimulators]:
    """Both simulators on loopback ports, fresh for each test module so writes do not leak."""
    with start_simulators(size=SIMULATOR_SIZE) as sims:
        yield sims
