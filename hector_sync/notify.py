"""The operator's e-mails: a failed run (which category, which step, what went wrong, how to
rerun) and a sync that did not run (which categories, their last success, what to do).

The failure e-mail is built from the run's own event log, so the run-failure sensor (with a
daemon) and `hector-sync sync` (without one) send the same words. The stale-sync e-mail says
what the freshness check says (freshness.Freshness.describe). Every known secret value is
masked before anything leaves, as a last line of defence behind errors that never hold one.

TLS (STARTTLS or implicit) verifies the server's certificate and host name with
`ssl.create_default_context()`: the system's CAs, or the bundle $SSL_CERT_FILE names. An e-mail
that cannot be sent raises `EmailNotSent`, one sentence naming the server and the reason.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from zoneinfo import ZoneInfo

import dagster as dg

from hector_sync.config import ConfigError, Direction, SmtpSettings, SyncConfig
from hector_sync.defs.tags import PARTITION_TAG
from hector_sync.freshness import Freshness, Limit, span

# Without dagster_url the e-mail cannot know where the UI is served: it says how to open it.
UI_HINT = ("served by `dagster dev` or `hector-sync demo --ui` on the sync's machine; "
           "dagster_url in the configuration links it here")


class EmailNotSent(OSError):
    """An e-mail did not leave: the SMTP server is unreachable, its certificate or name
    does not verify, it refused the login or the message. One sentence, no secret."""


class Report(Protocol):
    """What an e-mail to notify_on_error says: its subject, and a body that may link the UI."""

    @property
    def subject(self) -> str: ...

    def body(self, dagster_url: str | None = None) -> str: ...


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

    def body(self, dagster_url: str | None = None) -> str:
        """`dagster_url` (the configuration's, without a trailing slash) links the run itself."""
        rerun = f"hector-sync sync --category {self.category}" if self.category else "hector-sync sync"
        ui = dagster_url or UI_HINT
        run_link = [f"The run in the Dagster UI: {dagster_url}/runs/{self.run_id}", ""] if dagster_url else []
        lines = [
            f"The hector-sync run {self.run_id} ({self.job}) failed.",
            "",
            *run_link,
            f"Category: {self.category or '(none)'}",
            f"Step:     {', '.join(self.steps) or '(before any step)'}",
            "",
            "What went wrong:",
            *(f"  - {e}" for e in self.errors or ["the run failed without an error message"]),
            "",
            "Nothing of this category was written past the failed step; a rerun resumes safely.",
            "To rerun it once the cause is fixed:",
            f"  {rerun}",
            f"or in the Dagster UI ({ui}):",
            f"  Runs > {self.run_id} > Re-execute, or materialize partition '{self.category}' of the writeback asset.",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class StaleCategory:
    """A category that became stale, with what the instance says of its runs."""

    freshness: Freshness
    direction: Direction
    queued: int  # its runs waiting in the queue: a stuck queue shows here


@dataclass(frozen=True)
class StaleReport:
    """The e-mail of categories whose sync did not run: sent once when they become stale."""

    categories: list[StaleCategory]
    still_stale: list[str]  # keys e-mailed before and not synced since
    schedules: dict[str, str]  # the schedule of each of their directions: its state in words
    limit: Limit
    zone: ZoneInfo

    @property
    def subject(self) -> str:
        keys = ", ".join(f"'{c.freshness.key}'" for c in self.categories)
        noun = "category" if len(self.categories) == 1 else "categories"
        return f"hector-sync: no sync of {noun} {keys} for over {span(self.limit.total)}"

    def body(self, dagster_url: str | None = None) -> str:
        ui = dagster_url or UI_HINT
        lines = [
            f"No sync of these categories has succeeded for longer than {self.limit}:",
            "",
            *(f"  - {c.freshness.describe(self.zone)}; direction {c.direction.value}"
              + (f"; {c.queued} of its runs wait in the queue" if c.queued else "") for c in self.categories),
            "",
            "A failed run sends its own e-mail: if none came, these runs did not start or did not finish.",
            *(f"Schedule {name}: {state}" for name, state in self.schedules.items()),
            "",
            "What to do:",
            f"  - switch the schedule on if it is off: in the Dagster UI ({ui}), "
            f"Automation > {', '.join(self.schedules)};",
            "  - make sure the Dagster daemon runs (`dagster-daemon run`; `dagster dev` starts one) "
            "and that queued runs start (Runs > Queued);",
            "  - sync now from the command line:",
            *(f"      hector-sync sync --category {c.freshness.key}" for c in self.categories),
            "",
            *([f"Still stale, e-mailed before: {', '.join(self.still_stale)}", ""] if self.still_stale else []),
            "This is the only e-mail about them until they sync again.",
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
    """Send one message through `smtp`; EmailNotSent says why it did not leave."""
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    security = " (implicit TLS)" if smtp.tls == "implicit" else " (STARTTLS)" if smtp.starttls else ""
    server_name = f"the SMTP server {smtp.host}:{smtp.port}{security}"
    try:
        if smtp.tls == "implicit":
            server = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=30, context=ssl.create_default_context())
        else:
            server = smtplib.SMTP(smtp.host, smtp.port, timeout=30)
        with server:
            if smtp.starttls:
                # create_default_context: CERT_REQUIRED and check_hostname, against smtp.host
                server.starttls(context=ssl.create_default_context())
            if smtp.username and smtp.password:
                server.login(smtp.username, smtp.password.reveal())
            server.send_message(message)
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or str(exc)
        raise EmailNotSent(f"{server_name} presented a certificate that does not verify: {reason}") from None
    except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS, or no AUTH, offered
        raise EmailNotSent(f"{server_name} refused: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        said = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        raise EmailNotSent(f"{server_name} answered {exc.smtp_code} {' '.join(str(said).split())}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise EmailNotSent(f"{server_name} refused the recipient {', '.join(exc.recipients)}") from None
    except ConfigError as exc:  # the password's environment variable is not set
        raise EmailNotSent(f"{server_name} needs a login: {exc.message}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        unreachable = isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror))
        raise EmailNotSent(f"{server_name} {'cannot be reached' if unreachable else 'failed'}: {reason}") from None


def send_report(report: Report, config: SyncConfig) -> None:
    body = mask_secrets(report.body(config.dagster_url), config)
    try:
        send_email(config.smtp, config.notify_on_error, mask_secrets(report.subject, config), body)
    except EmailNotSent as unsent:  # a server's reply might quote what it was sent
        raise EmailNotSent(mask_secrets(str(unsent), config)) from None


def notify_failure(instance: dg.DagsterInstance, run_id: str, config: SyncConfig) -> FailureReport:
    """Build and send the failure e-mail of `run_id`; EmailNotSent if it did not leave."""
    report = failure_report(instance, run_id)
    send_report(report, config)
    return report
