"""Dagster resources: the configuration file, the DuckDB store, one client per system, the SMTP relay.

Each resource holds only the path of the configuration file; URLs and secrets come from the
file and its `{env: VAR}` entries when a run sets its resources up, so no secret is ever part
of the run configuration Dagster stores and shows.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, PrivateAttr

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.defs.tags import PARTITION_TAG
from hector_sync.hector import HectorClient
from hector_sync.http import JsonApi
from hector_sync.notify import FailureReport, StaleReport, notify_failure, send_report
from hector_sync.store import CATEGORY_WAIT_S, Store


class SyncConfigResource(dg.ConfigurableResource):
    """Which configuration file to use; None means $HECTOR_SYNC_CONFIG, else the demo.

    Read once per run (at set-up), so every step of a run works from the same file.
    """

    config_path: str | None = None
    _config: SyncConfig | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._config = load_config(self.config_path)

    def load(self) -> SyncConfig:
        return self._config or load_config(self.config_path)


class _SystemClient(dg.ConfigurableResource):
    """One system's client for a whole run, built at set-up: one session, one login and one
    rate limiter shared by the run's steps. Hand in another client (a test's, or the one a
    `hector-sync sync` shares between its categories) as this resource's value."""

    settings: SyncConfigResource
    client_class: ClassVar[type[JsonApi]]
    _client: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = self.client_class.for_sync(self.settings.load())

    def create_resource(self, context: dg.InitResourceContext) -> Any:
        """What the steps receive, as `ResourceParam[C2Client]` / `ResourceParam[HectorClient]`."""
        return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._client.close()


class C2ClientResource(_SystemClient):
    client_class = C2Client


class HectorClientResource(_SystemClient):
    client_class = HectorClient


class StoreResource(dg.ConfigurableResource):
    """The DuckDB file, and the category of the run reserved for it for the whole run."""

    settings: SyncConfigResource
    lock_wait_s: float = Field(
        CATEGORY_WAIT_S, description="How long a run waits while another run of the same category "
        "is under way before it is refused (seconds).")
    _held: ExitStack = PrivateAttr(default_factory=ExitStack)
    _store: Store | None = PrivateAttr(default=None)

    def store(self) -> Store:
        """One `Store` for every step of the run, so the schema is checked once per run."""
        if self._store is None:
            self._store = Store(Path(self.settings.load().storage.duckdb_path))
        return self._store

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # In-process runs set up resources once per run: the lock spans every step.
        run = context.run
        key = run.tags.get(PARTITION_TAG) if run else None
        if key:
            holder = f"run {run.run_id} ({run.job_name})"
            self._held.enter_context(self.store().category_lock(key, holder, self.lock_wait_s))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._held.close()


class SmtpResource(dg.ConfigurableResource):
    """Sends the operator's e-mails (a failed run, a stale sync) through the configured relay (TLS verified)."""

    settings: SyncConfigResource

    def recipient(self) -> str:
        return self.settings.load().notify_on_error

    def notify_failure(self, instance: dg.DagsterInstance, run_id: str) -> FailureReport:
        """Send the failure e-mail of `run_id`; `EmailNotSent` says why it did not leave."""
        return notify_failure(instance, run_id, self.settings.load())

    def notify_stale(self, report: StaleReport) -> None:
        """Send the stale-sync e-mail; `EmailNotSent` says why it did not leave."""
        send_report(report, self.settings.load())


def build_resources(config_path: str | None) -> dict[str, dg.ConfigurableResource]:
    settings = SyncConfigResource(config_path=config_path)
    return {
        "settings": settings,
        "store": StoreResource(settings=settings),
        "c2": C2ClientResource(settings=settings),
        "hector": HectorClientResource(settings=settings),
        "smtp": SmtpResource(settings=settings),
    }
