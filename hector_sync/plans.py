"""A change set is a plan: it has an id, the reads it was computed from, and a state per row.

Infrastructure tools treat `plan` and `apply` this way, and so do we, because every path that
reruns a writeback (the UI's Materialize, `dagster asset materialize`, re-execute from failure,
`hector-sync apply`) must be safe: a plan is applied at most once, row by row.

States of a change row:

| state | meaning |
| --- | --- |
| `planned` | computed, not yet sent |
| `sending` | its batch was handed to the writers; a rerun looks for what it may have created before sending again |
| `applied` | the system took it (created, updated, moved, retired, linked, unlinked, or found already there) |
| `conflict` | the target changed since the plan (If-Match refused it); the next plan looks again |
| `failed` | refused by the system, or held because a create's outcome is unknown |
| `skipped` | a reported skip or a missing item: nothing to send |

The pairs that already agree have no rows: the plan counts them (`Plan.unchanged`).

A plan is refused at writeback when it is older than `max_plan_age`, when either side has been
read again since it was computed, or when another plan wrote to the category after those reads
(a change set rematerialized alone re-plans from snapshots taken before the last writeback), or
an operator pinned or unpinned a pair of it (`hector-sync link`, `unlink`): a plan made before
an unlink would write the very link the operator took back.
Applying it could retire an item that has come back, or create one that exists now. The plan
computed from the same reads toward the other system (per_field) is no such writer: the two are
made together and never touch one item. An operator who has looked can let a stale plan
through (`allow_stale_plan`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl

from hector_sync.config import SYSTEM_NAMES, Direction
from hector_sync.store import HISTORY_COLUMNS, Store

PlanKind = Literal["sync", "undo"]
# Where each history outcome leaves the row it came from.
STATE_OF_OUTCOME = {
    "created": "applied", "updated": "applied", "moved": "applied", "retired": "applied",
    "reactivated": "applied", "linked": "applied", "unlinked": "applied", "reverted": "applied",
    "already_there": "applied",
    "conflict": "conflict", "refused": "failed", "held": "failed", "skipped": "skipped", "reported": "skipped",
}
APPLIED_OUTCOMES = tuple(o for o, state in STATE_OF_OUTCOME.items() if state == "applied")
OPEN_STATES = ("planned", "sending")  # what a writeback still has to send


class StalePlan(Exception):
    """The plan may no longer describe the systems; nothing of it was written."""


class UnknownPlan(Exception):
    """No plan has that id, or its rows were replaced by a newer plan."""


@dataclass(frozen=True)
class Plan:
    """One plan's identity: who computed it, when, from which reads, and the guard's verdict.

    The change-size guard is weighed once, when the plan is made (`CategorySync.new_plan`):
    the change set's check, `plan`'s output and every writeback of the plan read this verdict.
    """

    plan_id: str
    kind: PlanKind
    category_key: str
    direction: Direction
    run_id: str | None
    planned_at: datetime
    c2_read_run_id: str | None
    c2_read_at: datetime | None
    hector_read_run_id: str | None
    hector_read_at: datetime | None
    undo_of: str | None = None
    linked: int | None = None  # the active linked targets the guard weighed the plan against
    risky: int | None = None  # the items the plan retires or moves
    guard_refusal: str | None = None  # why the guard holds the plan back, in words; None: it may be written
    unchanged: int | None = None  # the pairs that already agree (None: a plan of an older version, which listed them)
    finished_by: str | None = None
    finished_at: datetime | None = None

    @staticmethod
    def new_id(category_key: str, direction: Direction, now: datetime) -> str:
        """Readable and typeable: category, target system, UTC time, and 4 random hex digits
        (only `[A-Za-z0-9_.-]`, so it is a valid Dagster tag value too)."""
        return f"{category_key}.{direction.target}.{now:%Y%m%dT%H%M%SZ}.{secrets.token_hex(2)}"

    def reads(self) -> dict[str, tuple[str | None, datetime | None]]:
        return {"c2": (self.c2_read_run_id, self.c2_read_at), "hector": (self.hector_read_run_id, self.hector_read_at)}

    def describe_reads(self) -> str:
        return "; ".join(
            f"{SYSTEM_NAMES[s]} read {at:%Y-%m-%d %H:%M:%S} UTC by run {run or '(plan command)'}"
            for s, (run, at) in self.reads().items() if at is not None
        ) or "no reads"

    def staleness(
        self, now: datetime, max_age: timedelta, latest_reads: dict[str, tuple[str | None, datetime]],
        written: tuple[str | None, datetime] | None = None,
    ) -> str | None:
        """Why this plan must not be applied now, in words with the plan, its age and the newer
        read or write; None when it is fresh. `latest_reads`: system → (run id, read time) as
        stored now; `written`: the first write to the category after its reads by another plan."""
        age = now - self.planned_at
        head = f"plan {self.plan_id} (computed {self.planned_at:%Y-%m-%d %H:%M:%S} UTC, {_duration(age)} ago)"
        if age > max_age:
            return f"{head} is older than max_plan_age {_duration(max_age)}"
        for system, (run, at) in latest_reads.items():
            _, planned_from = self.reads()[system]
            if planned_from is None or at > planned_from:
                return (f"{head} is superseded: {SYSTEM_NAMES[system]} was read again at "
                        f"{at:%Y-%m-%d %H:%M:%S} UTC by run {run or '(plan command)'}, after the read it was computed from")
        if written is not None:
            who, at = written
            return (f"{head} is superseded: {who or 'run (apply command)'} wrote to category '{self.category_key}' "
                    f"at {at:%Y-%m-%d %H:%M:%S} UTC, after the reads it was computed from")
        return None


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


PLAN_COLUMNS = tuple(Plan.__dataclass_fields__)


@dataclass(frozen=True)
class PlanBook:
    """The plans of the sync's DuckDB file: saved with their rows, read back, and advanced."""

    store: Store

    def save(self, plan: Plan, rows: pl.DataFrame) -> None:
        """Keep `plan` and its rows; they replace the category's earlier plan of the same kind
        toward the same system (whose header stays, for the history)."""
        stamped = rows.with_columns(
            plan_id=pl.lit(plan.plan_id), planned_at=pl.lit(plan.planned_at), run_id=pl.lit(plan.run_id),
            state=pl.lit("planned"),  # skips and missing items too: the writeback reports them
        )
        header = pl.DataFrame([{c: getattr(plan, c) for c in PLAN_COLUMNS} | {"direction": plan.direction.value}])
        with self.store.connect() as con:
            con.execute("BEGIN")
            con.execute(
                "DELETE FROM change_set WHERE category_key = ? AND direction = ? AND (plan_id IS NULL OR plan_id IN "
                "(SELECT plan_id FROM plan WHERE kind = ? AND category_key = ? AND direction = ?))",
                [plan.category_key, plan.direction.value, plan.kind, plan.category_key, plan.direction.value],
            )
            con.register("incoming_plan", header)
            con.execute(f"INSERT INTO plan BY NAME SELECT {', '.join(PLAN_COLUMNS)} FROM incoming_plan")
            con.unregister("incoming_plan")
            if stamped.height:
                cols = ", ".join(f'"{c}"' for c in stamped.columns)
                con.register("incoming_rows", stamped)
                con.execute(f"INSERT INTO change_set ({cols}) SELECT {cols} FROM incoming_rows")
                con.unregister("incoming_rows")
            con.execute("COMMIT")

    def get(self, plan_id: str) -> Plan:
        rows = self.store.query("SELECT * FROM plan WHERE plan_id = ?", [plan_id])
        if not rows.height:
            raise UnknownPlan(f"no plan has the id {plan_id!r}; `hector-sync plan` prints the ids")
        return _plan(rows.row(0, named=True))

    def latest(self, category_key: str, direction: Direction, kind: PlanKind = "sync") -> Plan | None:
        rows = self.store.query(
            "SELECT * FROM plan WHERE category_key = ? AND direction = ? AND kind = ? ORDER BY planned_at DESC LIMIT 1",
            [category_key, direction.value, kind],
        )
        return _plan(rows.row(0, named=True)) if rows.height else None

    def of_run(self, run_id: str, category_key: str, direction: Direction) -> Plan | None:
        """The plan a run computed for this category and direction, if it computed one."""
        rows = self.store.query(
            "SELECT * FROM plan WHERE run_id = ? AND category_key = ? AND direction = ? ORDER BY planned_at DESC LIMIT 1",
            [run_id, category_key, direction.value],
        )
        return _plan(rows.row(0, named=True)) if rows.height else None

    def rows(self, plan: Plan) -> pl.DataFrame:
        """Every row of the plan; UnknownPlan when a newer plan has replaced them."""
        self.check_current(plan)
        return self.store.query("SELECT * FROM change_set WHERE plan_id = ?", [plan.plan_id])

    def check_current(self, plan: Plan) -> None:
        """UnknownPlan when a newer plan has replaced this one's rows. Asks for one row, not all:
        a plan can hold a row per item, a million at a million CIs."""
        if self.store.query("SELECT 1 FROM change_set WHERE plan_id = ? LIMIT 1", [plan.plan_id]).height:
            return
        newer = self.replaced_by(plan)
        if newer:
            raise UnknownPlan(f"plan {plan.plan_id} was replaced by plan {newer}, computed from newer reads; "
                              "apply that one, or plan again")

    def replaced_by(self, plan: Plan) -> str | None:
        """The newer plan of the same kind that took this one's place, if any."""
        value = self.store.query(
            "SELECT plan_id FROM plan WHERE category_key = ? AND direction = ? AND kind = ? AND planned_at > ? "
            "ORDER BY planned_at DESC LIMIT 1",
            [plan.category_key, plan.direction.value, plan.kind, plan.planned_at],
        )
        return value.item() if value.height else None

    def applied_by(self, run_id: str) -> dict[str, list[Direction]]:
        """Category → directions in which run `run_id` changed something (what undo takes back)."""
        frame = self.store.query(
            "SELECT DISTINCT category_key, direction FROM change_history WHERE run_id = ? AND outcome IN "
            "(SELECT unnest(?::VARCHAR[])) ORDER BY 1, 2",
            [run_id, list(APPLIED_OUTCOMES)],
        )
        touched: dict[str, list[Direction]] = {}
        for key, direction in frame.iter_rows():
            touched.setdefault(key, []).append(Direction(direction))
        return touched

    def written_since_reads(self, plan: Plan) -> tuple[str | None, datetime] | None:
        """The first change applied to the plan's category after its reads by another plan,
        other than its sibling toward the other system (same reads, made together), or by an
        operator's pin or unpin; as (who: "run <id>" or "hector-sync link by <user>", when)."""
        reads = [at for _, at in plan.reads().values() if at is not None]
        if not reads:
            return None
        frame = self.store.query(
            """
            SELECT coalesce('run ' || h.run_id, 'hector-sync ' || h.action || ' by ' || h.operator), h.recorded_at
            FROM change_history h LEFT JOIN plan p ON p.plan_id = h.plan_id
            WHERE h.category_key = ? AND h.recorded_at > ? AND h.plan_id IS DISTINCT FROM ?
              AND (h.outcome IN (SELECT unnest(?::VARCHAR[])) OR h.operator IS NOT NULL)
              AND NOT coalesce(p.direction <> ? AND p.c2_read_at IS NOT DISTINCT FROM ?
                               AND p.hector_read_at IS NOT DISTINCT FROM ?, false)
            ORDER BY h.recorded_at LIMIT 1
            """,
            [plan.category_key, min(reads), plan.plan_id, list(APPLIED_OUTCOMES),
             plan.direction.value, plan.c2_read_at, plan.hector_read_at],
        )
        return frame.row(0) if frame.height else None  # type: ignore[return-value]

    def open_rows(self, plan: Plan) -> pl.DataFrame:
        """The rows a writeback still has to send, with their state. (list_contains, not `IN (SELECT
        unnest(?))`: the semi join made the query three times slower, asked twice per writeback.)"""
        return self.store.query(
            "SELECT * FROM change_set WHERE plan_id = ? AND list_contains(?::VARCHAR[], state)",
            [plan.plan_id, list(OPEN_STATES)],
        )

    def state_counts(self, plan: Plan) -> dict[str, int]:
        """Items per state of their rows, and the plan's unchanged items (counted, not rows)."""
        frame = self.store.query(
            "SELECT state, count(DISTINCT item) FROM change_set WHERE plan_id = ? GROUP BY 1", [plan.plan_id])
        counts = {str(k): int(n) for k, n in frame.iter_rows()}
        if plan.unchanged:
            counts["unchanged"] = counts.get("unchanged", 0) + plan.unchanged
        return counts

    def mark_sending(self, plan_id: str, keys: list[tuple[str, str]]) -> None:
        """(action, item) of a batch about to be sent: a kill from here on leaves them `sending`."""
        if not keys:
            return
        frame = pl.DataFrame(keys, schema={"action": pl.Utf8, "item": pl.Utf8}, orient="row")
        with self.store.connect() as con:
            con.register("sending", frame)
            con.execute(
                "UPDATE change_set SET state = 'sending' FROM sending s WHERE change_set.plan_id = ? "
                "AND change_set.action = s.action AND change_set.item = s.item AND change_set.state = 'planned'",
                [plan_id],
            )
            con.unregister("sending")

    def record(self, history: pl.DataFrame) -> None:
        """Append outcomes to the history and move their rows to the state each outcome means,
        in one transaction: after a kill, the history and the plan's states still agree."""
        if not history.height:
            return
        states = history.with_columns(state=pl.col("outcome").replace_strict(STATE_OF_OUTCOME, default="failed"))
        with self.store.connect() as con:
            con.execute("BEGIN")
            con.register("outcomes", states)
            con.execute(f"INSERT INTO change_history ({', '.join(HISTORY_COLUMNS)}) "
                        f"SELECT {', '.join(HISTORY_COLUMNS)} FROM outcomes")
            con.execute(
                "UPDATE change_set SET state = o.state FROM outcomes o WHERE change_set.plan_id = o.plan_id "
                "AND change_set.action = o.action AND change_set.item = o.item "
                "AND change_set.field IS NOT DISTINCT FROM o.field"
            )
            con.unregister("outcomes")
            con.execute("COMMIT")

    def finish(self, plan: Plan, run_id: str | None) -> Plan:
        """Note that nothing of the plan is left to send, and which run sent the last of it."""
        now = datetime.now(UTC)
        with self.store.connect() as con:
            con.execute("UPDATE plan SET finished_by = ?, finished_at = ? WHERE plan_id = ? AND finished_at IS NULL",
                        [run_id, now, plan.plan_id])
            return self.get(plan.plan_id)


def _plan(row: dict[str, object]) -> Plan:
    values = {c: row[c] for c in PLAN_COLUMNS}
    values["direction"] = Direction(str(row["direction"]))
    return Plan(**values)  # type: ignore[arg-type]
