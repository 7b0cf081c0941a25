"""When a category's sync is stale: the limit, derived from the schedule, and the verdict.

A failed run e-mails its failure; a run that never starts (the daemon down, the schedule
switched off, the run queue stuck) sends nothing. What notices it is time: a category whose
writebacks have not succeeded for longer than the schedule's cadence plus some slack is stale.
Pure: the asset check and the sensor (defs/freshness.py) hand in the last successes and the
time, so both reach the same verdict with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dagster._utils.schedules import cron_string_iterator

from hector_sync.config import ScheduleSettings

# What a scheduled run may take beyond its tick: a wait in the queue, then a full read.
SLACK = timedelta(hours=2)
# Long enough to hold every gap of a weekly or monthly cron.
CADENCE_SPAN = timedelta(weeks=5)


def cadence(cron: str) -> timedelta:
    """The longest gap between two ticks of `cron` over five weeks (or the first gap, if longer):
    24 h for a daily schedule, 72 h for one on weekdays. Counted in UTC, where a daylight-saving
    change moves no tick."""
    ticks = cron_string_iterator(0.0, cron, "UTC")
    end = datetime.fromtimestamp(0.0, UTC) + CADENCE_SPAN
    longest, previous = timedelta(0), next(ticks)
    while previous <= end:
        tick = next(ticks)
        longest, previous = max(longest, tick - previous), tick
    return longest


def span(duration: timedelta) -> str:
    """A duration as an operator reads it: minutes, hours, then days."""
    minutes = int(duration.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 72 else f"{hours // 24} days"


@dataclass(frozen=True)
class Limit:
    """How long a category may go without a successful sync: the schedule's cadence plus SLACK."""

    cadence: timedelta
    slack: timedelta = SLACK

    @classmethod
    def of(cls, schedule: ScheduleSettings) -> Limit:
        return cls(cadence(schedule.cron))

    @property
    def total(self) -> timedelta:
        return self.cadence + self.slack

    def __str__(self) -> str:
        return f"{span(self.total)} (the schedule's {span(self.cadence)} plus {span(self.slack)})"


def moment(instant: datetime, zone: ZoneInfo) -> str:
    """An instant in the schedule's time zone, as the e-mail and the check say it."""
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class Freshness:
    """One category's sync (or one of its writebacks) against the limit, at `now`."""

    key: str
    successes: tuple[datetime | None, ...]  # the latest success of each writeback its direction needs
    now: datetime
    limit: Limit
    since: datetime | None = None  # never synced: when watching began, so a new category gets one limit

    @property
    def last_success(self) -> datetime | None:
        """When every needed writeback had succeeded (a per_field category needs both); None: never."""
        known = [s for s in self.successes if s is not None]
        return min(known) if known and len(known) == len(self.successes) else None

    @property
    def age(self) -> timedelta | None:
        counted_from = self.last_success or self.since
        return None if counted_from is None else self.now - counted_from

    @property
    def stale(self) -> bool:
        return self.age is None or self.age > self.limit.total

    def describe(self, zone: ZoneInfo) -> str:
        """One sentence naming the category, its last success and how long ago."""
        last, age = self.last_success, self.age
        if age is None:
            return f"category '{self.key}' has never synced"
        if last is not None:
            verdict = "over" if self.stale else "within"
            return (f"category '{self.key}' last synced {moment(last, zone)}, {span(age)} ago: "
                    f"{verdict} the limit of {self.limit}")
        watched = f"watched since {moment(self.now - age, zone)}"
        if self.stale:
            return f"category '{self.key}' has never synced, {watched} ({span(age)} ago)"
        return f"category '{self.key}' has not synced yet, {watched}; stale after {self.limit}"
