"""What both directions' change sets share: the row shape, the actions, the drift rule, and
the summary and guard that decide whether a change set may be written.

A change row is (action, item, target_id, target_version, model_key, field, old, new, reason)
and the request it makes (method, target, body: see `reconcile.requests`): `item` is the source
side's id (a CI toward Hector, an asset toward C2 ITSM), `target_id` the item written and
`target_version` the version its request's If-Match carries. Every source item ends in exactly
one of: a create, a link/update/move (or, toward Hector, the reactivation of an asset the sync
retired), the removal of the ref an operator unlinked, `unchanged`, or `skip` with a reason;
every linked target whose source is gone ends in a retire or `missing`. The rows of one API call
carry the same request, which the writeback sends; the history keeps the rows. Unchanged items
are counted, not listed (`ChangeSet`).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from hector_sync.config import SYSTEM_NAMES, Direction
from hector_sync.reconcile.mapping import CategoryPlan
from hector_sync.reconcile.normalize import CASELESS, comparable, lit, quoted

ACTIONS: dict[Direction, tuple[str, ...]] = {
    Direction.C2_TO_HECTOR: (
        "create_subcategory", "update_subcategory", "create_asset", "link_asset", "unlink_asset",
        "update_asset", "revert_drift", "move_asset", "retire_asset", "reactivate_asset", "unchanged", "missing",
        "skip",
    ),
    Direction.HECTOR_TO_C2: (
        "create_ci", "link_ci", "unlink_ci", "update_ci", "revert_drift", "retire_ci", "unchanged", "missing",
        "skip",
    ),
}
RISKY = ("move_asset", "retire_asset", "retire_ci")  # what the guard weighs
UNCHANGED = "unchanged"  # the outcome counted rather than listed (ChangeSet)
ROW_COLUMNS = ("action", "item", "target_id", "target_version", "model_key", "field", "old", "new", "reason")
CHANGE_SCHEMA = {
    "category_key": pl.Utf8, "direction": pl.Utf8, "action": pl.Utf8, "item": pl.Utf8,
    "target_id": pl.Utf8, "target_version": pl.Int64, "model_key": pl.Utf8, "field": pl.Utf8,
    "old": pl.Utf8, "new": pl.Utf8, "reason": pl.Utf8, "method": pl.Utf8, "target": pl.Utf8, "body": pl.Utf8,
}


@dataclass(frozen=True)
class ChangeSet:
    """A change set's rows, and the pairs that already agree as a count.

    A row per agreeing pair said nothing an operator reads, and at a million CIs it was most
    of the work: a million rows sorted, handed to polars and kept in the plan on every run. The
    SQL gives them as one `tally` row, which `split` takes off."""

    rows: pl.DataFrame
    unchanged: int = 0

    @classmethod
    def split(cls, frame: pl.DataFrame) -> ChangeSet:
        counted = frame.filter(pl.col("action") == UNCHANGED)
        return cls(frame.filter(pl.col("action") != UNCHANGED), int(counted["new"].item()) if counted.height else 0)


def tally(pairs: str) -> str:
    """SQL of the one row that counts the agreeing pairs, `pairs` being their FROM ... WHERE."""
    return f"SELECT {lit(UNCHANGED)} AS action, '' AS item, CAST(count(*) AS VARCHAR) AS new FROM {pairs}"


def entries(plan: CategoryPlan, indexes: tuple[int, ...], field: str, old: str, new: str) -> str:
    """A list of {field, old, new} structs, one per target index; the strings are templates
    over `{i}` (target index), `{name}` (its Hector name) and `{source}` (its C2 field).

    Where `new` is `old` in another case and the target's kind is CASELESS (an e-mail address),
    `new` is `old`: the same value, so no difference, and the old spelling is what is agreed.
    """

    def new_value(i: int) -> str:
        kind, was, value = plan.targets[i].kind, _fill(plan, old, i), _fill(plan, new, i)
        if kind not in CASELESS:
            return value
        return f"CASE WHEN {comparable(was, kind)} = {comparable(value, kind)} THEN {was} ELSE {value} END"

    items = [f"{{'field': {_fill(plan, field, i)}, 'old': {_fill(plan, old, i)}, 'new': {new_value(i)}}}" for i in indexes]
    return "[" + ", ".join(items) + "]" if items else "[]::STRUCT(field VARCHAR, old VARCHAR, new VARCHAR)[]"


def _fill(plan: CategoryPlan, template: str, i: int) -> str:
    t = plan.targets[i]
    return template.format(i=i, name=lit(t.name), source=lit(t.source))


def differs(plan: CategoryPlan, indexes: tuple[int, ...], old: str, new: str) -> str:
    """SQL: some target of `indexes` holds another value in `old` than in `new` (templates as
    in `entries`). Most pairs agree: this one comparison per field spares them building the
    entry list that `differing` would only empty again."""
    terms = [f"{comparable(_fill(plan, old, i), plan.targets[i].kind)} IS DISTINCT FROM "
             f"{comparable(_fill(plan, new, i), plan.targets[i].kind)}" for i in indexes]
    return "(" + " OR ".join(terms) + ")" if terms else "false"


def differing(entry_list: str) -> str:
    """The entries whose old and new differ, unnested into field, old and new columns."""
    return f"unnest(list_filter({entry_list}, lambda x: x.old IS DISTINCT FROM x.new), recursive := true)"


def assemble(plan: CategoryPlan, direction: Direction, parts: list[str]) -> str:
    """The tail of a change set's SQL: its parts (CTE names) as one frame of change rows, the
    request columns still to come (`reconcile.requests`, which sorts them by `row_order`)."""
    columns = ", ".join(f"NULL::{'BIGINT' if c == 'target_version' else 'VARCHAR'} AS {c}" for c in ROW_COLUMNS)
    union = "\n            UNION ALL BY NAME ".join([f"SELECT {columns} WHERE false"] + [f"SELECT * FROM {p}" for p in parts])
    return f"""
        all_rows AS (
            {union}
        )
        SELECT {lit(plan.key)} AS category_key, {lit(direction.value)} AS direction, action, item,
               target_id, target_version, model_key, field, old, new, reason
        FROM all_rows
    """


def row_order(direction: Direction) -> str:
    """SQL ORDER BY terms of a change set: the direction's actions in their order, then item and field."""
    return f"array_position({list(ACTIONS[direction])!r}, action), item, field"


def with_drift(rows: str, plan: CategoryPlan, direction: Direction, *, ci_column: str, names: str | None = None) -> str:
    """Field rows with the per_field echo rule applied against the baseline (value last agreed).

    The written side still holding the baseline value means only the owner changed: a plain
    update. The written side having moved away from the baseline while the owner still holds it
    is drift: reported as `revert_drift` and put back. Both moved: the owner wins, said so.
    `names` (SQL of field → name) maps a row's `field` to the target name the baseline is
    keyed by, where the two differ (C2 field names).
    """
    other, owner = SYSTEM_NAMES[direction.target], SYSTEM_NAMES[direction.source]
    drift = f"b.field IS NOT NULL AND NOT {_same_value(plan, direction, 'r.old', 'b.value')}"
    back = _same_value(plan, direction, "r.new", "b.value")
    return f"""
        SELECT CASE WHEN {drift} AND {back} THEN 'revert_drift' ELSE r.action END AS action,
               r.* EXCLUDE (action, reason),
               CASE WHEN {drift} AND {back}
                    THEN 'drift: ' || r.field || ' was changed in {other} from '
                         || coalesce({quoted('b.value')}, 'empty') || ' to ' || coalesce({quoted('r.old')}, 'empty')
                         || ', but {owner} owns it; its value is put back'
                    WHEN {drift}
                    THEN r.field || ' changed on both sides since they last agreed; {owner} owns it, so its value wins'
                    ELSE r.reason END AS reason
        FROM ({rows}) r
        LEFT JOIN ({names or "SELECT NULL AS field, NULL AS name WHERE false"}) n ON n.field = r.field
        LEFT JOIN baseline b ON b.category_key = {lit(plan.key)} AND b.ci_id = r.{ci_column}
                             AND b.field = coalesce(n.name, r.field)
    """


def _same_value(plan: CategoryPlan, direction: Direction, a: str, b: str) -> str:
    """SQL: values `a` and `b` of a change row's field `r.field` are one value by its target's
    kind (e-mail addresses in any case); rows name fields as the system written to does."""
    caseless = {(t.source if direction is Direction.HECTOR_TO_C2 else t.name): t.kind
                for t in plan.targets if t.kind in CASELESS}
    same = f"{a} IS NOT DISTINCT FROM {b}"
    cases = " ".join(f"WHEN r.field = {lit(name)} THEN {comparable(a, kind)} IS NOT DISTINCT FROM {comparable(b, kind)}"
                     for name, kind in caseless.items())
    return f"(CASE {cases} ELSE {same} END)" if cases else same


@dataclass(frozen=True)
class Summary:
    """What a change set amounts to, per item (not per field), and the guard's figures."""

    counts: dict[str, int]
    linked: int
    risky: int  # retires and moves: the changes the guard weighs

    @property
    def fraction(self) -> float:
        return self.risky / self.linked if self.linked else 0.0


def item_counts(rows: pl.DataFrame, direction: Direction, unchanged: int = 0) -> dict[str, int]:
    """Items per action, in the direction's order of actions (every action, zero or not);
    `unchanged` adds the counted ones to any listed (by a plan of an older version)."""
    per_item = rows.select("action", "item").unique()
    counted = dict(per_item.group_by("action").len().iter_rows())
    return dict.fromkeys(ACTIONS[direction], 0) | counted | {UNCHANGED: counted.get(UNCHANGED, 0) + unchanged}


def summarize(changes: ChangeSet, linked: int, direction: Direction = Direction.C2_TO_HECTOR) -> Summary:
    counts = item_counts(changes.rows, direction, changes.unchanged)
    return Summary(counts=counts, linked=linked, risky=sum(counts.get(a, 0) for a in RISKY))


@dataclass(frozen=True)
class Guard:
    """The change-size guard (docs/sync-rules.md): hold back a change set that looks like a wipe."""

    max_fraction: float
    source_count: int
    previous_source_count: int | None
    direction: Direction = Direction.C2_TO_HECTOR

    def refusal(self, summary: Summary) -> str | None:
        """Why the writeback must be held back, in words with the numbers, or None."""
        source = SYSTEM_NAMES[self.direction.source]
        items, targets = self.direction.source_items, self.direction.target_items
        if self.source_count == 0 and self.previous_source_count:
            return (
                f"{source} answered with an empty category where the last snapshot had "
                f"{self.previous_source_count} {items}; nothing was written"
            )
        if summary.fraction > self.max_fraction:
            return (
                f"the change set would retire or move {summary.risky} of {summary.linked} linked "
                f"{targets} ({summary.fraction:.0%}), more than max_change_fraction "
                f"{self.max_fraction:.0%}; nothing was written"
            )
        return None
