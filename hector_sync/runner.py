"""Runs categories through Dagster from the command line, recorded in a persistent instance.

Without a daemon nothing would e-mail a failure, so a failed run here sends the same e-mail the
run-failure sensor sends (but for a plan's: `plan` prints its failure to whoever asked). The
instance is `hector_sync.instance`'s.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from hector_sync.config import ConfigError, Direction, SyncConfig
from hector_sync.defs.assets import WRITEBACK_ASSET
from hector_sync.defs.jobs import JOB_OF, UNDO_JOB, planning_selection
from hector_sync.defs.tags import ALLOW_LARGE_CHANGE_TAG, PLAN_TAG, READ_TAG, SYSTEM_TAGS
from hector_sync.definitions import build_definitions
from hector_sync.instance import dagster_home, open_instance
from hector_sync.notify import failure_report, send_report
from hector_sync.plans import Plan, PlanBook
from hector_sync.state import SUMMARY_COLUMNS, SyncState
from hector_sync.store import Store
from hector_sync.sync import open_clients

QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def planned_by(book: PlanBook, run_id: str, key: str, direction: Direction) -> str | None:
    plan = book.of_run(run_id, key, direction)
    return plan.plan_id if plan else None


@dataclass
class CategoryResult:
    key: str
    direction: str
    run_id: str
    success: bool
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    plan_id: str | None = None  # the plan the run computed or applied


def run_sync(
    config: SyncConfig, config_path: str | None, keys: list[str], *, full: bool = False,
    allow_large_change: bool = False, plan_only: bool = False,
) -> list[CategoryResult]:
    """One Dagster run per category, in its direction's job; a failed category does not stop the others.

    `plan_only` (`hector-sync plan`) stops each run before its writebacks: the same steps and
    blocking checks as a sync, so a plan fails where the sync would, and e-mails nobody."""
    tags = {READ_TAG: "full"} if full else {}
    if allow_large_change:
        tags[ALLOW_LARGE_CHANGE_TAG] = "true"
    if plan_only:
        tags[PLAN_TAG] = "true"
    runs = Runs(config, config_path)
    results = []
    with runs.instance() as instance, ExitStack() as clients:
        shared = runs.shared_clients(clients)
        for key in keys:
            direction = config.category(key).direction
            if direction not in JOB_OF:
                results.append(CategoryResult(key, direction.value, "", True, dict.fromkeys(SUMMARY_COLUMNS, 0)))
                continue
            job = runs.defs.resolve_job_def(JOB_OF[direction])
            if plan_only:
                job = job.get_subset(asset_selection=set(planning_selection(direction)))
            outcome = job.execute_in_process(
                partition_key=key, instance=instance, tags=tags, raise_on_error=False, run_config=QUIET,
                resources=shared,
            )
            results += runs.results(instance, outcome, key, direction.flows, notify=not plan_only)
    return results


def run_undo(
    config: SyncConfig, config_path: str | None, run_id: str, keys: list[str], *, apply: bool,
    allow_large_change: bool = False,
) -> list[CategoryResult]:
    """`undo_run` per category: the inverse plan of what run `run_id` applied, shown only (the
    run writes nothing, like a plan's) or applied under the guard and If-Match."""
    tags = {ALLOW_LARGE_CHANGE_TAG: "true"} if allow_large_change else {}
    if not apply:
        tags[PLAN_TAG] = "true"
    run_config = QUIET | {"ops": {"undo_category": {"config": {"run_id": run_id, "apply": apply}}}}
    runs = Runs(config, config_path)
    touched = runs.book.applied_by(run_id)
    results = []
    with runs.instance() as instance, ExitStack() as clients:
        shared = runs.shared_clients(clients)
        job = runs.defs.resolve_job_def(UNDO_JOB)
        for key in keys:
            outcome = job.execute_in_process(
                partition_key=key, instance=instance, tags=tags, raise_on_error=False, run_config=run_config,
                resources=shared,
            )
            results += runs.results(instance, outcome, key, tuple(touched[key]), notify=apply)
    return results


def run_plan(
    config: SyncConfig, config_path: str | None, plan: Plan, *, allow_stale_plan: bool = False,
    allow_large_change: bool = False,
) -> CategoryResult:
    """Apply exactly `plan` by materializing its category's writeback partition through Dagster,
    so the run and what it wrote show in the UI like any other materialization."""
    asset = WRITEBACK_ASSET[plan.direction]
    tags = SYSTEM_TAGS | ({ALLOW_LARGE_CHANGE_TAG: "true"} if allow_large_change else {})
    run_config = QUIET | {"ops": {asset: {"config": {"plan_id": plan.plan_id, "allow_stale_plan": allow_stale_plan}}}}
    runs = Runs(config, config_path)
    with runs.instance() as instance:
        outcome = runs.defs.resolve_implicit_global_asset_job_def().execute_in_process(
            partition_key=plan.category_key, instance=instance, tags=tags, raise_on_error=False,
            run_config=run_config, asset_selection=[dg.AssetKey(asset)],
        )
        return runs.results(instance, outcome, plan.category_key, (plan.direction,), plan.plan_id)[0]


@dataclass
class Runs:
    """The persistent instance and the definitions that `sync` and `apply` run in, and how a
    finished run becomes result rows (e-mailing its failure, as the sensor would)."""

    config: SyncConfig
    config_path: str | None
    defs: dg.Definitions = field(init=False)
    book: PlanBook = field(init=False)

    def __post_init__(self) -> None:
        self.home = dagster_home(self.config)
        self.defs = build_definitions(self.config_path)
        self.store = Store(Path(self.config.storage.duckdb_path))
        self.book = PlanBook(self.store)

    def instance(self) -> AbstractContextManager[dg.DagsterInstance]:
        return open_instance(self.home)

    def shared_clients(self, stack: ExitStack) -> dict[str, object]:
        """One client per system for every category of the command, closed with `stack`: one
        login, one rate limiter, and a server that stayed down for one category fails the next
        ones at once (the breaker). Empty when a secret or url is refused: each run then builds
        its own, fails on it and says so, in its summary row and its e-mail, like any failure."""
        try:
            c2, hector = stack.enter_context(open_clients(self.config))
        except (ConfigError, ValueError):
            return {}
        return {"c2": c2, "hector": hector}

    def results(
        self, instance: dg.DagsterInstance, outcome: dg.ExecuteInProcessResult, key: str,
        directions: tuple[Direction, ...], plan_id: str | None = None, *, notify: bool = True,
    ) -> list[CategoryResult]:
        """A row per direction of the run; a failure is e-mailed as the sensor would (`notify`)."""
        rows = []
        with self.store.connect():  # every direction's plan and counts in one hold of the file
            for way in directions:
                applied = plan_id or planned_by(self.book, outcome.run_id, key, way)
                counts = SyncState(self.store).outcome_counts(key, way.value, outcome.run_id, applied)
                rows.append(CategoryResult(key, way.value, outcome.run_id, outcome.success, counts, plan_id=applied))
        if not outcome.success:
            report = failure_report(instance, outcome.run_id)
            error = "; ".join(report.errors)
            if notify:
                try:
                    send_report(report, self.config)
                except OSError as unsent:
                    error += f" (the failure e-mail to {self.config.notify_on_error} could not be sent: {unsent})"
            rows[-1].error = error
        return rows
