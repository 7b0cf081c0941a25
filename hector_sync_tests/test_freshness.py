"""A sync that did not run: the freshness check per category, and the stale-sync e-mail.

End to end: real syncs recorded in a Dagster instance (a temporary DAGSTER_HOME), the
simulators, a real SMTP server (aiosmtpd), the schedule switched off as the UI does it. Time
moves through the definitions' clock; each sensor tick is evaluated as the daemon evaluates it
(its cursor kept, its check results recorded in the instance).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from hector_sync.config import TO_C2, TO_HECTOR, Direction, ScheduleSettings, load_config
from hector_sync.definitions import build_definitions
from hector_sync.defs.assets import TO_HECTOR_ASSETS
from hector_sync.defs.freshness import SENSOR, StaleEmailNotSent, check_key
from hector_sync.defs.resources import build_resources
from hector_sync.freshness import Freshness, Limit
from hector_sync.simulators.serve import RunningSimulators, start_simulators
from hector_sync_tests.conftest import Mail, Mailbox, WriteConfig, free_port
from hector_sync_tests.systems import PRINTERS_PER_FIELD, configure, sync

SIZE = 40  # CIs per category: a few pages, quick
NOTIFY = "it-ops@example.org"  # the demo configuration's notify_on_error
WRITEBACK = "hector_writeback"  # where the demo's c2_to_hector categories land
HOURS = timedelta(hours=1)


@dataclass
class Clock:
    """The definitions' clock: the test sets the time the check and the sensor see."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sims() -> Iterator[RunningSimulators]:
    with start_simulators(size=SIZE) as running:
        yield running


def keep(*keys: str) -> Callable[[dict], None]:
    """A `write_config` edit: only these of the demo's categories."""
    def edit(data: dict) -> None:
        data["categories"] = [c for c in data["categories"] if c["key"] in keys]
    return edit


def last_writeback(instance: dg.DagsterInstance, key: str) -> datetime:
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(WRITEBACK), asset_partitions=[key]), limit=1).records
    return datetime.fromtimestamp(record.timestamp, UTC)


@dataclass
class Daemon:
    """Ticks the stale-sync sensor as the daemon does: with the definitions' resources, recording
    the check results it returns, and keeping its cursor only when the tick succeeds."""

    defs: dg.Definitions
    config_path: Path
    instance: dg.DagsterInstance
    cursor: str | None = None

    def tick(self) -> None:
        sensor = self.defs.resolve_sensor_def(SENSOR)
        repository = self.defs.get_repository_def()
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, repository_def=repository, repository_name=repository.name,
            resources={"smtp": build_resources(str(self.config_path))["smtp"]},
        ) as context:
            result = sensor.evaluate_tick(context)
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        self.cursor = result.cursor


def switch_off(instance: dg.DagsterInstance, schedule: str) -> None:
    """Stop the schedule as the UI's toggle does: a stored state that overrides its default."""
    with in_process_test_workspace(
        instance, LoadableTargetOrigin(module_name="hector_sync.definitions", attribute="defs")
    ) as workspace:
        [entry] = workspace.get_code_location_entries().values()
        assert entry.code_location is not None
        remote = entry.code_location.get_repository("__repository__").get_schedule(schedule)
        instance.stop_schedule(remote.get_remote_origin_id(), remote.selector_id, remote)


def check_shows(instance: dg.DagsterInstance, key: str, direction: Direction = TO_HECTOR) -> tuple[bool, str]:
    """What the UI shows for the category's check on a writeback: passed, and its description."""
    record = instance.get_latest_asset_check_evaluation_record(check_key(key, direction))
    assert record is not None and record.event is not None, f"the check of {key} was never recorded"
    evaluation = record.event.dagster_event.event_specific_data  # type: ignore[union-attr]
    return evaluation.passed, evaluation.description


def stale_mail_says(mail: Mail, key: str, *words: str) -> None:
    assert mail.rcpt_tos == [NOTIFY]
    subject = mail.message["Subject"]
    assert subject == f"hector-sync: no sync of category '{key}' for over 26 h", subject
    body = "\n".join(mail.body.splitlines())  # as sent: CRLF line ends
    for word in (f"category '{key}'", f"hector-sync sync --category {key}", "dagster-daemon run", *words):
        assert word in body, f"'{word}' is not in the stale-sync e-mail:\n{body}"


def test_a_switched_off_schedule_is_emailed_once_per_stale_episode(
    sims: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox,
) -> None:
    """The acceptance test: a synced category, the schedule switched off, time passes. The
    sensor e-mails once however many ticks find it stale, and again after a sync and a new
    stale episode. The parked category is never named."""
    config = load_config(write_config(sims.c2_url, sims.hector_url, edit=keep("printers", "phones")))
    sync(config, "printers")
    clock = Clock(datetime.now(UTC))
    defs = build_definitions(str(config.source), clock=clock)
    assert defs.resolve_sensor_def(SENSOR).default_status == dg.DefaultSensorStatus.RUNNING

    with dg.DagsterInstance.get() as instance:
        switch_off(instance, "daily_c2_to_hector")
        synced = last_writeback(instance, "printers")

        daemon = Daemon(defs, config.source, instance)
        for hours in (1, 25):  # within the schedule's 24 h plus 2 h
            clock.now = synced + hours * HOURS
            daemon.tick()
        assert mailbox.messages == []
        passed, description = check_shows(instance, "printers")  # recorded when the sensor first saw it
        assert passed and "1 h ago: within the limit" in description, description

        for hours in (27, 28, 30, 50, 100):  # one stale episode, many ticks
            clock.now = synced + hours * HOURS
            daemon.tick()
        assert len(mailbox.messages) == 1, [m.message["Subject"] for m in mailbox.messages]
        [mail] = mailbox.messages
        stale_mail_says(mail, "printers", "27 h ago", "over the limit of 26 h (the schedule's 24 h plus 2 h)",
                        "Schedule daily_c2_to_hector: 0 21 * * * (America/Toronto), switched off")
        assert "phones" not in mail.body, mail.body
        passed, description = check_shows(instance, "printers")
        assert not passed and description.startswith("category 'printers' last synced "), description
        assert "27 h ago: over the limit" in description, description

        sync(config, "printers")  # the operator syncs it: the episode ends
        synced = last_writeback(instance, "printers")
        clock.now = synced + HOURS
        daemon.tick()
        passed, description = check_shows(instance, "printers")
        assert passed and "1 h ago: within the limit" in description, description

        for hours in (27, 40):  # and a new episode: one more e-mail
            clock.now = synced + hours * HOURS
            daemon.tick()
    assert len(mailbox.messages) == 2, [m.message["Subject"] for m in mailbox.messages]
    stale_mail_says(mailbox.messages[1], "printers", "27 h ago")


def test_each_category_has_a_check_that_says_whether_it_synced_in_time(
    sims: RunningSimulators, write_config: WriteConfig,
) -> None:
    """Each category's check executed on its own, as from the UI: fresh, then stale a day later,
    for the synced category; failing for one never synced; none for a parked one."""
    config = load_config(write_config(sims.c2_url, sims.hector_url, edit=keep("printers", "laptops", "phones")))
    sync(config, "printers")
    clock = Clock(datetime.now(UTC))
    defs = build_definitions(str(config.source), clock=clock)
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key == dg.AssetKey(WRITEBACK)}
    assert checks == {"printers_synced_on_schedule", "laptops_synced_on_schedule"}, "a parked category is never checked"

    with dg.DagsterInstance.get() as instance:

        def check(key: str) -> tuple[bool, str]:
            job = defs.resolve_implicit_global_asset_job_def().get_subset(
                asset_selection=set(), asset_check_selection={check_key(key, TO_HECTOR)})
            [evaluation] = job.execute_in_process(instance=instance).get_asset_check_evaluations()
            return evaluation.passed, evaluation.description or ""

        synced = last_writeback(instance, "printers")
        clock.now = synced + 3 * HOURS
        passed, said = check("printers")
        assert passed and said.startswith("category 'printers' last synced "), said
        assert "3 h ago: within the limit of 26 h" in said, said
        clock.now = synced + 27 * HOURS
        passed, said = check("printers")
        assert not passed and "27 h ago: over the limit of 26 h (the schedule's 24 h plus 2 h)" in said, said
        assert check("laptops") == (False, "category 'laptops' has never synced")
        assert check_shows(instance, "printers") == (passed, said), "the UI does not show the latest result"


def test_a_per_field_category_is_stale_until_both_its_writebacks_succeed(
    sims: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox,
) -> None:
    """Its Hector writeback succeeded an hour ago, its C2 ITSM writeback never (a run of the Hector
    side alone): the category is stale, and each writeback's check says which one is behind."""
    config = configure(write_config, sims, PRINTERS_PER_FIELD)
    clock = Clock(datetime.now(UTC) - 30 * HOURS)  # the sensor has watched the category for 30 h
    defs = build_definitions(str(config.source), clock=clock)
    with dg.DagsterInstance.get() as instance:
        daemon = Daemon(defs, config.source, instance)
        daemon.tick()
        assert defs.resolve_job_def("per_field_sync").execute_in_process(
            partition_key="printers", instance=instance, asset_selection=[a.key for a in TO_HECTOR_ASSETS]).success
        clock.now = last_writeback(instance, "printers") + HOURS
        daemon.tick()

        passed, description = check_shows(instance, "printers", TO_HECTOR)
        assert passed and "1 h ago: within the limit" in description, description
        passed, description = check_shows(instance, "printers", TO_C2)
        assert not passed and description.startswith("category 'printers' has never synced, watched since"), description
    [mail] = mailbox.messages
    stale_mail_says(mail, "printers", "has never synced, watched since", "(31 h ago); direction per_field",
                    "Schedule daily_per_field: ")


@contextmanager
def watching(path: Path) -> Iterator[tuple[Clock, Daemon, datetime]]:
    """The stale-sync sensor of the file at `path`, ticked by a daemon, on a clock the test moves;
    and the instant the clock starts at."""
    started = datetime.now(UTC)
    clock = Clock(started)
    defs = build_definitions(str(path), clock=clock)
    with dg.DagsterInstance.get() as instance:
        yield clock, Daemon(defs, path, instance), started


def test_a_category_never_synced_gets_one_limit_from_when_the_sensor_first_saw_it(
    write_config: WriteConfig, mailbox: Mailbox,
) -> None:
    """A new deployment does not alarm before its first scheduled run could have happened."""
    path = write_config("http://127.0.0.1:9", "http://127.0.0.1:9", edit=keep("laptops", "servers"))
    with watching(path) as (clock, daemon, started):
        daemon.tick()
        clock.now = started + 25 * HOURS
        daemon.tick()
        assert mailbox.messages == []
        clock.now = started + 27 * HOURS
        daemon.tick()
        daemon.tick()
    [mail] = mailbox.messages
    stale_mail_says(mail, "laptops", "has never synced, watched since", "on (its default); no tick recorded")
    assert "servers" not in mail.body, mail.body


def test_an_unsent_stale_email_fails_the_tick_and_is_sent_on_the_next(
    write_config: WriteConfig, mailbox: Mailbox,
) -> None:
    """The relay is down when the episode begins: the tick fails and keeps its cursor, so the
    next tick, with the relay back, sends the e-mail (once)."""
    def relay_down(data: dict) -> None:
        keep("laptops")(data)
        data["smtp"]["port"] = free_port()  # nothing listens there

    path = write_config("http://127.0.0.1:9", "http://127.0.0.1:9", edit=relay_down)
    with watching(path) as (clock, daemon, started):
        daemon.tick()
        clock.now = started + 27 * HOURS
        unsent = f"about laptops to {NOTIFY} could not be sent: .*next tick tries again"
        with pytest.raises(StaleEmailNotSent, match=unsent):
            daemon.tick()

        write_config("http://127.0.0.1:9", "http://127.0.0.1:9", edit=keep("laptops"))  # the relay is back
        daemon.tick()
        daemon.tick()
    [mail] = mailbox.messages
    stale_mail_says(mail, "laptops", "has never synced")


def test_the_limit_is_the_schedules_cadence_plus_slack_and_per_field_needs_both_writebacks() -> None:
    daily = ScheduleSettings(cron="0 21 * * *", timezone="America/Toronto", full_sync_weekday="friday")
    assert Limit.of(daily).total == 26 * HOURS
    weekdays = daily.model_copy(update={"cron": "0 21 * * 1-5"})
    assert Limit.of(weekdays).total == 74 * HOURS, "Friday to Monday is the longest gap"

    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    limit = Limit.of(daily)
    recent, old = now - 2 * HOURS, now - 30 * HOURS
    assert not Freshness("mixed", (recent, recent), now, limit).stale
    assert Freshness("mixed", (recent, old), now, limit).last_success == old
    assert Freshness("mixed", (recent, old), now, limit).stale, "one writeback 30 h old leaves the category stale"
    assert Freshness("mixed", (recent, None), now, limit).stale, "one writeback never succeeded"
