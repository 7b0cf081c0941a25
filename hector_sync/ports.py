"""The loopback ports `hector-sync demo` and `hector-sync simulate` listen on, decided before
anything starts (docs/configuration.md, "Commands").

A port the operator named must be free, or the command stops with one line naming the option
that changes it. A busy default port (a demo already running, a Dagster UI) gives way to a free
port, said in one line, where the caller allows it: the demo does, as it writes the
configuration it runs; `simulate` does not, as the embedded configuration names its ports.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

from hector_sync.demo import DEMO_C2_PORT, DEMO_HECTOR_PORT, DEMO_UI_PORT

LOOPBACK = "127.0.0.1"


class PortUnavailable(Exception):
    """A port that must be used cannot be listened on; one line, naming the option to change."""


@dataclass(frozen=True)
class Listener:
    """One server of the command: its name, its default port, the option that chooses another,
    and what most likely holds the default when it is busy."""

    name: str
    default: int
    option: str
    likely_holder: str


SIMULATOR_HOLDER = "another demo or `hector-sync simulate`?"
DAGSTER_UI = Listener("Dagster UI", DEMO_UI_PORT, "--port", "another demo or Dagster UI?")
C2_SIMULATOR = Listener("C2 ITSM simulator", DEMO_C2_PORT, "--c2-port", SIMULATOR_HOLDER)
HECTOR_SIMULATOR = Listener("Hector simulator", DEMO_HECTOR_PORT, "--hector-port", SIMULATOR_HOLDER)
LISTENERS = (DAGSTER_UI, C2_SIMULATOR, HECTOR_SIMULATOR)


@dataclass
class PortChooser:
    """Chooses a command's ports one listener after the other, never one port for two of them."""

    fallback: bool  # whether a busy default gives way to a free port
    notes: list[str] = field(default_factory=list, init=False)  # a line per default that gave way
    _taken: dict[int, str] = field(default_factory=dict, init=False)  # port -> the listener's name

    def choose(self, listener: Listener, given: int | None) -> int:
        """`given`, else the listener's default; 0, or a busy default where allowed, takes a free port.

        The port is probed, then let go: start_simulators and `dagster dev` take a port number,
        not a socket, and bind it a moment later.
        """
        wanted = listener.default if given is None else given
        why = self._why_not(wanted) if wanted else None
        if why and (given is not None or not self.fallback):
            raise PortUnavailable(f"port {wanted} {why}; choose another with {listener.option}")
        port = self._free_port() if why or not wanted else wanted
        if why:
            self.notes.append(f"port {wanted} {why}: the {listener.name} takes port {port} instead "
                              f"({listener.option} chooses one)")
        self._taken[port] = listener.name
        return port

    def _why_not(self, port: int) -> str | None:
        """Why a server cannot listen on `port` now, or None. Probed as uvicorn listens
        (SO_REUSEADDR), so a port that a stopped server left in TIME_WAIT counts as free."""
        if port in self._taken:
            return f"is the {self._taken[port]}'s"
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, port))
                probe.listen()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    return f"cannot be listened on ({exc.strerror})"
                holder = next((f" ({n.likely_holder})" for n in LISTENERS if n.default == port), "")
                return f"is in use{holder}"
        return None

    def _free_port(self) -> int:
        while True:
            with socket.socket() as sock:
                sock.bind((LOOPBACK, 0))
                port: int = sock.getsockname()[1]
            if port not in self._taken:
                return port
