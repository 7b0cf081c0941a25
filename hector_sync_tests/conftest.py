"""Fixtures shared by the test modules."""

import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from hector_sync.demo import DEMO_CONFIG_PATH, DEMO_ENV
from hector_sync.instance import local_instance
from hector_sync.simulators.serve import RunningSimulators, start_simulators

SIMULATOR_SIZE = 120  # CIs per category: several pages at page_size 50, yet fast to serve


@pytest.fixture(scope="module")
def simulators() -> Iterator[RunningSimulators]:
    """Both simulators on loopback ports, fresh for each test module so writes do not leak."""
    with start_simulators(size=SIMULATOR_SIZE) as sims:
        yield sims


@dataclass
class Mail:
    """One message as the SMTP server received it: envelope recipients, raw bytes, parsed."""

    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage

    @property
    def body(self) -> str:
        return self.message.get_content()


@dataclass
class Mailbox:
    """aiosmtpd handler that keeps every message; `host`/`port` say where it listens."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Mail] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        mail = Mail(list(envelope.rcpt_tos), raw, message_from_bytes(raw, policy=policy.default))
        with self._arrived:
            self.messages.append(mail)
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            return list(self.messages)


def default_signals() -> None:
    """preexec_fn for a child a test stops with Ctrl-C or SIGTERM: a shell's background job (and
    so a pytest started as one) ignores SIGINT, and an ignored signal is inherited across exec."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on loopback (aiosmtpd) that collects what it is sent."""
    box = Mailbox(port=free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def demo_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's secrets in the environment variables its configuration names, and no other
    configuration file in the way."""
    for name, value in DEMO_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HECTOR_SYNC_CONFIG", raising=False)


@pytest.fixture
def sync_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo credentials in their environment variables and a private DAGSTER_HOME."""
    demo_credentials(monkeypatch)
    home = local_instance(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path, mailbox: Mailbox, sync_env: Path) -> WriteConfig:
    """`write_config(c2_url, hector_url, edit=None, name="config.yaml")`: the demo configuration
    pointed at these simulators, at `mailbox` and at a DuckDB file in tmp_path; `edit` may
    change the parsed file before it is written."""

    def write(c2_url: str, hector_url: str, *, edit: Callable[[dict], None] | None = None,
              name: str = "config.yaml") -> Path:
        text = DEMO_CONFIG_PATH.read_text(encoding="utf-8")
        replacements = {
            "url: http://127.0.0.1:8701": f"url: {c2_url}",
            "url: http://127.0.0.1:8702": f"url: {hector_url}",
            "host: localhost": f"host: {mailbox.host}",
            "port: 8025": f"port: {mailbox.port}",
            "duckdb_path: hector_sync.duckdb": f"duckdb_path: {tmp_path / 'hector_sync.duckdb'}",
        }
        for old, new in replacements.items():
            assert text.count(old) == 1, f"the demo configuration no longer holds '{old}' once"
            text = text.replace(old, new)
        if edit is not None:
            data = yaml.safe_load(text)
            edit(data)
            text = yaml.safe_dump(data, sort_keys=False)
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
