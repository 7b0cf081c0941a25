"""E-mails the operator when any sync run fails (needs the Dagster daemon; `hector-sync sync`
sends the same e-mail itself).

A notice that cannot be sent is not lost. Dagster 1.13's run-failure sensor moves its cursor
past a run even when the sensor function raises an ordinary exception (the tick fails, the run
is never offered again). An unsent e-mail therefore raises `FailureEmailNotSent`, a DagsterError:
Dagster passes those through its user-code boundary, so the whole evaluation fails, the tick
shows why, the cursor stays where it was and the next tick offers the same run again. The run
records the outcome in its `hector_sync/failure_email` tag; one already `sent` is not sent
twice when a tick is retried. The runs of `hector-sync plan` e-mail nobody: they write nothing,
and whoever asked for the plan reads its failure in the command's output.
"""

import dagster as dg

from hector_sync.defs.resources import SmtpResource
from hector_sync.defs.tags import EMAIL_TAG, PLAN_TAG
from hector_sync.notify import EmailNotSent

SENT = "sent"  # the value of EMAIL_TAG once the e-mail left


class FailureEmailNotSent(dg.DagsterError):
    """The failure e-mail of a run did not leave; the sensor's next tick offers the run again."""


@dg.run_failure_sensor(
    name="email_on_sync_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends notify_on_error the category, step, error and rerun command of a failed run; "
    "an e-mail that cannot be sent fails the tick and is tried again on the next one.",
)
def email_on_sync_failure(context: dg.RunFailureSensorContext, smtp: SmtpResource) -> None:
    run_id = context.dagster_run.run_id
    run = context.instance.get_run_by_id(run_id)
    if run is not None and run.tags.get(PLAN_TAG) == "true":
        context.log.info(f"run {run_id} only planned (hector-sync plan): no e-mail")
        return
    if run is not None and run.tags.get(EMAIL_TAG) == SENT:
        context.log.info(f"the failure e-mail for run {run_id} was already sent")
        return
    try:
        report = smtp.notify_failure(context.instance, run_id)
    except EmailNotSent as unsent:
        context.instance.add_run_tags(run_id, {EMAIL_TAG: f"not sent, the sensor retries: {unsent}"})
        raise FailureEmailNotSent(
            f"the failure e-mail for run {run_id} to {smtp.recipient()} could not be sent: {unsent}; "
            "the sensor's next tick tries again"
        ) from None
    context.instance.add_run_tags(run_id, {EMAIL_TAG: SENT})
    context.log.info(f"failure e-mail sent for run {report.run_id} ({report.category})")
