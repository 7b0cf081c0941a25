"""Dagster resources: the configuration file, the DuckDB store, the SMTP relay.

Each resource holds only the path of the configuration file; URLs and secrets come from the
file and its `{env: VAR}` entries when a client is built (by `CategorySync`), so no secret is ever part of the run
configuration Dagster stores and shows.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from hector_sync.config import SyncConfig, load_config
from hector_sync.notify import FailureReport, notify_failure
from hector_sync.store import CATEGORY_WAIT_S, Store

PARTITION_TAG = "dagster/partition"


@lru_cache(maxsize=8)
def _load(path: str | None) -> SyncConfig:
    return load_config(path)


class SyncConfigResource(dg.ConfigurableResource):
    """Which configuration file to use; None means $HECTOR_SYNC_CONFIG, else the demo."""

    config_path: str | None = None

    def load(self) -> SyncConfig:
        return _load(self.config_path)


class StoreResource(dg.ConfigurableResource):
    """The DuckDB file, and the category of the run reserved for it for the whole run."""

    settings: SyncConfigResource
    lock_wait_s: float = Field(
        CATEGORY_WAIT_S, description="How long a run waits while another run of the same category "
        "is under way before it is refused (seconds).")
    _held: ExitStack = PrivateAttr(default_factory=ExitStack)

    def store(self) -> Store:
        return Store(Path(self.settings.load().storage.duckdb_path))

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
    """Sends the operator's failure e-mail through the configured relay (TLS verified)."""

    settings: SyncConfigResource

    def recipient(self) -> str:
        return self.settings.load().notify_on_error

    def notify_failure(self, instance: dg.DagsterInstance, run_id: str) -> FailureReport:
        """Send the failure e-mail of `run_id`; `EmailNotSent` says why it did not leave."""
        return notify_failure(instance, run_id, self.settings.load())


def build_resources(config_path: str | None) -> dict[str, dg.ConfigurableResource]:
    settings = SyncConfigResource(config_path=config_path)
    return {
        "settings": settings,
        "store": StoreResource(settings=settings),
        "smtp": SmtpResource(settings=settings),
    }
