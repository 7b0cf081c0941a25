"""The operator's failure e-mail: which category, which step, what went wrong, how to rerun.

Built from the run's own event log, so the run-failure sensor (with a daemon) and
`hector-sync sync` (without one) send the same words. Every known secret value is masked
before anything leaves, as a last line of defence behind errors that never hold one.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage

import dagster as dg

from hector_sync.config import ConfigError, SmtpSettings, SyncConfig

PARTITION_TAG = "dagster/partition"


@dataclass(frozen=True)
class FailureReport:
    run_id: str
    job: str
    category: str | None
    steps: list[str]
    errors: list[str]

    @property
    def subject(self) -> str:
        return f"hector-sync: sync of category '{self.category or 'all'}' failed"

    def body(self, ui_url: str = "http://127.0.0.1:3000") -> str:
        rerun = f"hector-sync sync --category {self.category}" if self.category else "hector-sync sync"
        lines = [
            f"The hector-sync run {self.run_id} ({self.job}) failed.",
            "",
            f"Category: {self.category or '(none)'}",
            f"Step:     {', '.join(self.steps) or '(before any step)'}",
            "",
            "What went wrong:",
            *(f"  - {e}" for e in self.errors or ["the run failed without an error message"]),
            "",
            "Nothing of this category was written past the failed step; a rerun resumes safely.",
            "To rerun it once the cause is fixed:",
            f"  {rerun}",
            f"or in the Dagster UI ({ui_url}): Runs > {self.run_id} > Re-execute, or materialize",
            f"partition '{self.category}' of the writeback asset.",
        ]
        return "\n".join(lines)


def _innermost(error: object) -> str:
    """Dagster wraps user errors, and ours wrap the library's: the operator needs the message
    we raised (the first of ours in the chain), else the innermost one."""
    chain = [error]
    while getattr(chain[-1], "cause", None) is not None:
        chain.append(chain[-1].cause)  # type: ignore[attr-defined]
    messages = [str(getattr(e, "message", e)).strip() for e in chain]
    message = next((m for m in messages if m.startswith("hector_sync.")), messages[-1])
    return message.split(": ", 1)[1] if message.startswith(("dagster.", "hector_sync.")) else message


def failure_report(instance: dg.DagsterInstance, run_id: str) -> FailureReport:
    run = instance.get_run_by_id(run_id)
    assert run is not None, run_id
    steps: list[str] = []
    errors: list[str] = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            steps.append(event.step_key or "")
            errors.append(_innermost(event.event_specific_data.error))
        elif event.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE and event.event_specific_data.error:
            steps.append("run setup")  # e.g. the category is held by another run
            errors.append(_innermost(event.event_specific_data.error))
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                description = evaluation.description or "failed"
                errors.insert(0, f"check {evaluation.check_name}: {description}")
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not errors:
            errors.append(record.message or "")
    # Sibling steps often fail on the same cause (both snapshots on a rejected key): say it once.
    errors = list(dict.fromkeys(errors))
    return FailureReport(run_id, run.job_name, run.tags.get(PARTITION_TAG), steps, errors)


def mask_secrets(text: str, config: SyncConfig) -> str:
    secrets = [config.c2.password, config.hector.api_key, config.smtp.password]
    for secret in filter(None, secrets):
        try:
            value = secret.reveal()
        except ConfigError:
            continue
        text = text.replace(value, "***")
    return text


def send_email(smtp: SmtpSettings, to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=30) as server:
        if smtp.starttls:
            server.starttls()
        if smtp.username and smtp.password:
            server.login(smtp.username, smtp.password.reveal())
        server.send_message(message)


def send_report(report: FailureReport, config: SyncConfig) -> None:
    body = mask_secrets(report.body(), config)
    send_email(config.smtp, config.notify_on_error, mask_secrets(report.subject, config), body)


def notify_failure(instance: dg.DagsterInstance, run_id: str, config: SyncConfig) -> FailureReport:
    report = failure_report(instance, run_id)
    send_report(report, config)
    return report
