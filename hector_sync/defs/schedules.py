"""The daily sync: one schedule per direction's job, one run per category of that direction,
full on one weekday.

Static partitions cannot use `build_schedule_from_partitioned_job` with a cron (dagster#28210),
so each schedule yields a RunRequest per category itself.
"""


import dagster as dg

from hector_sync.config import Direction, SyncConfig
from hector_sync.defs.jobs import JOB_OF
from hector_sync.defs.tags import READ_TAG
from hector_sync.sync import full_read_day


def schedule_name(direction: Direction) -> str:
    """The schedule of a direction's job, as the UI lists it and the stale-sync e-mail names it."""
    return f"daily_{direction.value}"


def daily_schedule(config: SyncConfig, direction: Direction) -> dg.ScheduleDefinition:
    job = JOB_OF[direction]

    @dg.schedule(
        name=schedule_name(direction),
        job_name=job,
        cron_schedule=config.schedule.cron,
        execution_timezone=config.schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily {direction.value} sync of every category configured that way.",
    )
    def _daily(context: dg.ScheduleEvaluationContext):
        scheduled = context.scheduled_execution_time
        mode = "full" if full_read_day(config, scheduled) else "incremental"
        stamp = scheduled.strftime("%Y-%m-%dT%H:%M")
        for category in config.categories:
            if category.direction is direction:
                yield dg.RunRequest(
                    run_key=f"{category.key}-{stamp}", partition_key=category.key, tags={READ_TAG: mode}
                )

    return _daily


def build_schedules(config: SyncConfig) -> list[dg.ScheduleDefinition]:
    return [daily_schedule(config, direction) for direction in JOB_OF]
