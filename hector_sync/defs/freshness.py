"""Notices a sync that did not run: a freshness check per category, and a sensor that e-mails.

Each category that syncs has a check on each writeback of its direction, named after it
(`printers_synced_on_schedule` on `hector_writeback`; a per_field category has one on both):
did that writeback succeed within the limit (freshness.Limit: the schedule's cadence plus
slack)? A parked category has none: it is never stale.

What must notice a sync that did not run cannot be a run. So the sensor `email_on_stale_sync`
works from the instance alone: each tick it reads every category's last successful writebacks
from the materialization records and weighs them with the same `freshness.Freshness`. It
e-mails once per episode (a category goes stale: one e-mail; it syncs again: the episode
ends), and records the categories' checks without a run when it first sees them and when an
episode begins or ends, so the UI shows a stale category even when no run can start. Its
cursor holds the episodes: which categories are stale and e-mailed, and when it first saw each
one (a category never synced gets one limit from then, so a new deployment does not alarm
before its first scheduled run). The checks can also be executed from the UI at any time.

An unsent e-mail is not lost: it raises `StaleEmailNotSent`, a DagsterError, so the tick fails,
the cursor stays and the next tick finds the same episode beginning and sends it again.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.definitions.run_request import InstigatorType

from hector_sync.config import CategoryConfig, Direction, ScheduleSettings, SyncConfig
from hector_sync.defs.assets import WRITEBACK_ASSET
from hector_sync.defs.resources import SmtpResource
from hector_sync.defs.schedules import schedule_name
from hector_sync.defs.tags import PARTITION_TAG
from hector_sync.freshness import Freshness, Limit, moment
from hector_sync.notify import EmailNotSent, StaleCategory, StaleReport

SENSOR = "email_on_stale_sync"
TICK_S = 300  # staleness is counted in hours: a look every five minutes is plenty

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class StaleEmailNotSent(dg.DagsterError):
    """The stale-sync e-mail did not leave; the sensor's next tick sends it again."""


def check_key(key: str, direction: Direction) -> dg.AssetCheckKey:
    """The category's check on its writeback `direction`; Dagster names take no '-'."""
    return dg.AssetCheckKey(dg.AssetKey(WRITEBACK_ASSET[direction]), f"{key.replace('-', '_')}_synced_on_schedule")


def latest_success(instance: dg.DagsterInstance, direction: Direction, key: str) -> datetime | None:
    """When the category's writeback `direction` last materialized, that is, succeeded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(WRITEBACK_ASSET[direction]), asset_partitions=[key]), limit=1
    ).records
    return datetime.fromtimestamp(records[0].timestamp, UTC) if records else None


def outcome(verdict: Freshness, zone: ZoneInfo) -> dict[str, Any]:
    """The check's result, the same from a run and from the sensor: passed, description, metadata."""
    metadata: dict[str, Any] = {"limit_hours": verdict.limit.total.total_seconds() / 3600}
    if verdict.last_success is not None:
        metadata["last_success"] = dg.MetadataValue.timestamp(verdict.last_success)
    if verdict.age is not None:
        metadata["hours_since"] = round(verdict.age.total_seconds() / 3600, 1)
    return {"passed": not verdict.stale, "description": verdict.describe(zone), "metadata": metadata}


def freshness_checks(flowing: list[CategoryConfig], limit: Limit, clock: Clock,
                     zone: ZoneInfo) -> list[dg.AssetChecksDefinition]:
    """One check per category and writeback of its direction, in one op (any subset runs)."""
    checked = {check_key(c.key, d): (c.key, d) for c in flowing for d in c.direction.flows}
    if not checked:
        return []

    @dg.multi_asset_check(
        name="synced_on_schedule", can_subset=True,
        specs=[dg.AssetCheckSpec(
            check.name, asset=check.asset_key,
            description=f"Category '{key}': its writeback {direction.arrow} succeeded within {limit}. Recorded by "
            f"the sensor {SENSOR} when the category goes stale and when it syncs again.",
        ) for check, (key, direction) in checked.items()],
    )
    def _synced(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        now = clock()
        for check in context.selected_asset_check_keys:
            key, direction = checked[check]
            verdict = Freshness(key, (latest_success(context.instance, direction, key),), now, limit)
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, **outcome(verdict, zone))

    return [_synced]


@dataclass(frozen=True)
class Watch:
    """The sensor's cursor: when it first saw each category, and which are in a stale episode
    (e-mailed, not synced since)."""

    seen: dict[str, datetime]
    stale: frozenset[str]

    @classmethod
    def of(cls, cursor: str | None) -> Self:
        kept = json.loads(cursor) if cursor else {}
        return cls({k: datetime.fromisoformat(v) for k, v in kept.get("seen", {}).items()},
                   frozenset(kept.get("stale", [])))

    def cursor(self) -> str:
        return json.dumps({"seen": {k: v.isoformat() for k, v in sorted(self.seen.items())},
                           "stale": sorted(self.stale)})


def schedule_state(instance: dg.DagsterInstance, repository: str | None, name: str, schedule: ScheduleSettings) -> str:
    """The schedule in words: its cron, on or switched off, and its last tick (none: the daemon's
    scheduler never ran it)."""
    cron = f"{schedule.cron} ({schedule.timezone})"
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
              if s.instigator_name == name and repository in (None, s.origin.repository_origin.repository_name)]
    if not states:
        return f"{cron}, on (its default); no tick recorded"
    state = states[0]
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
    last = (f"last tick {moment(datetime.fromtimestamp(ticks[0].timestamp, UTC), ZoneInfo(schedule.timezone))}"
            f" ({ticks[0].status.value.lower()})" if ticks else "no tick recorded")
    return f"{cron}, {'on' if state.is_running else 'switched off'}; {last}"


def queued_runs(instance: dg.DagsterInstance, key: str) -> int:
    return instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED], tags={PARTITION_TAG: key}))


def stale_sync_sensor(schedule: ScheduleSettings, flowing: list[CategoryConfig], limit: Limit, clock: Clock,
                      zone: ZoneInfo) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=TICK_S,
        description=f"E-mails notify_on_error once when a category has not synced for over {limit}: a run "
        "that never starts sends no failure e-mail. Once per episode: again only after the category synced and "
        "went stale anew. Records the categories' synced_on_schedule checks. An e-mail that cannot be sent "
        "fails the tick and is tried again on the next one.",
    )
    def _stale(context: dg.SensorEvaluationContext, smtp: SmtpResource) -> dg.SensorResult:
        now = clock()
        before = Watch.of(context.cursor)
        seen = {c.key: before.seen.get(c.key, now) for c in flowing}
        successes = {c.key: {d: latest_success(context.instance, d, c.key) for d in c.direction.flows} for c in flowing}
        verdicts = {c.key: Freshness(c.key, tuple(successes[c.key].values()), now, limit, seen[c.key]) for c in flowing}
        stale = frozenset(k for k, v in verdicts.items() if v.stale)
        began = [c for c in flowing if c.key in stale - before.stale]
        if began:
            report = StaleReport(
                [StaleCategory(verdicts[c.key], c.direction, queued_runs(context.instance, c.key)) for c in began],
                sorted(stale & before.stale),
                {schedule_name(d): schedule_state(context.instance, context.repository_name, schedule_name(d), schedule)
                 for d in dict.fromkeys(c.direction for c in began)},
                limit, zone)
            try:
                smtp.notify_stale(report)
            except EmailNotSent as unsent:
                raise StaleEmailNotSent(
                    f"the stale-sync e-mail about {', '.join(c.key for c in began)} to {smtp.recipient()} could not "
                    f"be sent: {unsent}; the sensor's next tick tries again") from None
        changed = [c for c in flowing if c.key not in before.seen or (c.key in stale) != (c.key in before.stale)]
        evaluations = [  # the checks of categories first seen, gone stale or synced again
            dg.AssetCheckEvaluation(
                asset_key=check.asset_key, check_name=check.name,
                **outcome(Freshness(c.key, (successes[c.key][d],), now, limit, seen[c.key]), zone))
            for c in changed for d in c.direction.flows for check in [check_key(c.key, d)]
        ]
        return dg.SensorResult(
            cursor=Watch(seen, stale).cursor(), asset_events=evaluations,
            skip_reason=f"stale: {', '.join(sorted(stale)) or 'none'}; e-mailed now: "
                        f"{', '.join(c.key for c in began) or 'none'}",
        )

    return _stale


def build_freshness(config: SyncConfig,
                    clock: Clock) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """The checks and the sensor, with the one limit the schedule gives."""
    limit = Limit.of(config.schedule)
    zone = ZoneInfo(config.schedule.timezone)
    flowing = [c for c in config.categories if c.direction.flows]  # a parked category is never stale
    checks = freshness_checks(flowing, limit, clock, zone)
    return checks, stale_sync_sensor(config.schedule, flowing, limit, clock, zone)
