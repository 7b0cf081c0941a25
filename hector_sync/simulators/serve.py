"""Run both simulators on loopback: in background threads of this process (tests, the demo) or
in the foreground until Ctrl-C (`hector-sync simulate`, `python -m hector_sync.simulators`)."""

import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from hector_sync.demo import (
    DEMO_C2_PASSWORD, DEMO_C2_PORT, DEMO_C2_READONLY_PASSWORD, DEMO_C2_READONLY_USERNAME,
    DEMO_C2_USERNAME, DEMO_HECTOR_API_KEY, DEMO_HECTOR_PORT, DEMO_SEED, DEMO_SIZE,
)

from .c2_app import C2State, create_c2_app
from .hector_app import HectorState, create_hector_app
from .sample_data import SampleData

STARTUP_TIMEOUT_S = 30.0


@dataclass
class RunningSimulators:
    """Both simulators, up. URLs are the base ("http://127.0.0.1:PORT"), without /api/v1."""

    c2_url: str
    hector_url: str
    c2: C2State
    hector: HectorState
    _servers: list[tuple[uvicorn.Server, threading.Thread]] = field(repr=False)

    def stop(self) -> None:
        _stop(self._servers)

    def __enter__(self) -> "RunningSimulators":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _stop(servers: list[tuple[uvicorn.Server, threading.Thread]]) -> None:
    for server, _ in servers:
        server.should_exit = True
    for _, thread in servers:
        thread.join(timeout=STARTUP_TIMEOUT_S)


def _bind(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn: a busy port is then an OSError for the caller, and
    port 0's real port is known before the server starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _start(app: FastAPI, sock: socket.socket, name: str) -> tuple[uvicorn.Server, threading.Thread]:
    # log_config=None leaves the host's logging alone; the access log would cost every call.
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name,
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} did not start; see the log above")
        time.sleep(0.005)
    return server, thread


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start_simulators(*, seed: int = DEMO_SEED, size: int = DEMO_SIZE,
                     sizes: Mapping[str, int] | None = None, host: str = "127.0.0.1",
                     c2_port: int = 0, hector_port: int = 0,
                     reference: int | None = None, copies: int = 0) -> RunningSimulators:
    """Start both simulators in background threads and return once they accept calls.

    Port 0 picks a free port. `reference` (epoch seconds, default now) is the instant CI
    modification times lead up to; pass one to get identical `modified_at` across runs.
    `copies` adds that many copies of Printers to both systems (sample_data.copies_of).
    """
    data = SampleData(seed, size, sizes, reference, copies)
    c2, hector = C2State(data), HectorState(data)
    socks: list[socket.socket] = []
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    try:
        socks += [_bind(host, c2_port), _bind(host, hector_port)]
        servers.append(_start(create_c2_app(c2), socks[0], "C2 ITSM simulator"))
        servers.append(_start(create_hector_app(hector), socks[1], "Hector simulator"))
    except BaseException:
        _stop(servers)
        for sock in socks:
            sock.close()
        raise
    c2_sock, hector_sock = socks
    return RunningSimulators(_url(c2_sock), _url(hector_sock), c2, hector, servers)


def serve_forever(*, seed: int = DEMO_SEED, size: int = DEMO_SIZE,
                  sizes: Mapping[str, int] | None = None, host: str = "127.0.0.1",
                  c2_port: int = DEMO_C2_PORT, hector_port: int = DEMO_HECTOR_PORT,
                  copies: int = 0) -> None:
    """Start both, print where they listen and how to log in, and serve until Ctrl-C.

    The first two lines of stdout end with the C2 ITSM and the Hector URL, for scripts.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with start_simulators(seed=seed, size=size, sizes=sizes, host=host, c2_port=c2_port,
                          hector_port=hector_port, copies=copies) as sims:
        counts = ", ".join(f"{name} {n}" for name, n in sims.c2.data.sizes.items())
        print(f"C2 ITSM simulator: {sims.c2_url}", flush=True)
        print(f"Hector simulator: {sims.hector_url}", flush=True)
        print(f"  C2 ITSM login: {DEMO_C2_USERNAME} / {DEMO_C2_PASSWORD} (read-write), "
              f"{DEMO_C2_READONLY_USERNAME} / {DEMO_C2_READONLY_PASSWORD} (read-only)")
        print(f"  Hector API key: {DEMO_HECTOR_API_KEY}")
        print(f"  Data: seed {seed}; CIs per category: {counts}")
        print("  Admin (no auth): GET/PUT /_sim/faults, GET /_sim/stats, POST /_sim/stats/reset, "
              "POST /_sim/expire-tokens (C2)")
        print("Press Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Stopping the simulators.", flush=True)
