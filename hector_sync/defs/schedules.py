"""The daily sync: one run per category whose direction the job covers, full on one weekday.

Static partitions cannot use `build_schedule_from_partitioned_job` with a cron (dagster#28210),
so this schedule yields a RunRequest per category itself.
"""


import dagster as dg

from hector_sync.config import SyncConfig
from hector_sync.defs.assets import READ_TAG
from hector_sync.defs.jobs import C2_TO_HECTOR_JOB
from hector_sync.sync import C2_TO_HECTOR, full_read_day


def build_schedules(config: SyncConfig) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="daily_c2_to_hector",
        job_name=C2_TO_HECTOR_JOB,
        cron_schedule=config.schedule.cron,
        execution_timezone=config.schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily C2 ITSM → Hector sync of every category that flows that way.",
    )
    def daily_c2_to_hector(context: dg.ScheduleEvaluationContext):
        scheduled = context.scheduled_execution_time
        mode = "full" if full_read_day(config, scheduled) else "incremental"
        stamp = scheduled.strftime("%Y-%m-%dT%H:%M")
        for category in config.categories:
            if category.direction in C2_TO_HECTOR:
                yield dg.RunRequest(
                    run_key=f"{category.key}-{stamp}", partition_key=category.key, tags={READ_TAG: mode}
                )

    return [daily_c2_to_hector]
