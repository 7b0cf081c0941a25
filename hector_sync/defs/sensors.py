"""E-mails the operator when any sync run fails (needs the Dagster daemon; `hector-sync sync`
sends the same e-mail itself)."""

import dagster as dg

from hector_sync.defs.resources import SmtpResource


@dg.run_failure_sensor(
    name="email_on_sync_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends notify_on_error the category, step, error and rerun command of a failed run.",
)
def email_on_sync_failure(context: dg.RunFailureSensorContext, smtp: SmtpResource) -> None:
    report = smtp.notify_failure(context.instance, context.dagster_run.run_id)
    context.log.info(f"failure e-mail sent for run {report.run_id} ({report.category})")
