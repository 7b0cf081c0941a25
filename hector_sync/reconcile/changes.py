"""The diff: desired state against Hector's snapshot, as change rows field by field.

A change row is (action, item, target_id, target_version, model_key, field, old, new, reason).
Every CI ends in exactly one of: a create, a link/update/move, `unchanged`, or `skip` with a
reason; every linked asset whose CI is gone ends in `retire_asset` or `missing`. The apply step
groups rows by item into single API calls; the history keeps them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from hector_sync.reconcile.mapping import MODEL_KEY_FIELDS, CategoryPlan
from hector_sync.reconcile.match import hector_assets, hector_models, matches
from hector_sync.reconcile.normalize import lit, model_label, quoted

DIRECTION = "c2_to_hector"
ACTIONS = (
    "create_subcategory", "update_subcategory", "create_asset", "link_asset", "update_asset",
    "move_asset", "retire_asset", "unchanged", "missing", "skip",
)
CHANGE_SCHEMA = {
    "category_key": pl.Utf8, "direction": pl.Utf8, "action": pl.Utf8, "item": pl.Utf8,
    "target_id": pl.Utf8, "target_version": pl.Int64, "model_key": pl.Utf8, "field": pl.Utf8,
    "old": pl.Utf8, "new": pl.Utf8, "reason": pl.Utf8,
}


def _entries(plan: CategoryPlan, scope: str, old: str, new: str) -> str:
    """A list of {field, old, new} structs for the scope's targets; `old`/`new` are templates."""
    items = [
        f"{{'field': {lit(t.name)}, 'old': {old.format(i=i, name=lit(t.name))}, "
        f"'new': {new.format(i=i, name=lit(t.name))}}}"
        for i, t in enumerate(plan.targets) if t.scope == scope
    ]
    return "[" + ", ".join(items) + "]"


def _differing(entries: str) -> str:
    return f"unnest(list_filter({entries}, lambda x: x.old IS DISTINCT FROM x.new), recursive := true)"


def hector_change_set(plan: CategoryPlan, *, full_read: bool, default_stockroom: str) -> str:
    """SQL for the whole change set of one category toward Hector."""
    key = lit(plan.key)
    model_keys_kept = ", ".join(lit(k) for k in MODEL_KEY_FIELDS)
    desired_label = model_label(*(f"dm.fields[{lit(k)}]" for k in MODEL_KEY_FIELDS))
    gone_reason = (
        "CASE WHEN c.status = 'retired' THEN 'the CI is retired in C2 ITSM' "
        "ELSE 'the CI is no longer listed in C2 ITSM' END"
    )
    return f"""
        WITH d AS (SELECT * FROM desired_asset WHERE category_key = {key}),
        dm AS (SELECT * FROM desired_model WHERE category_key = {key}),
        hm AS MATERIALIZED ({hector_models(plan)}),
        h AS MATERIALIZED ({hector_assets(plan)}),
        {matches()},
        sub AS (
            SELECT dm.model_key, dm.fields, s.id, s.version, s.* EXCLUDE (id, version, model_key)
            FROM dm LEFT JOIN (SELECT * FROM hm QUALIFY row_number() OVER (
                PARTITION BY model_key ORDER BY id) = 1) s USING (model_key)
        ),
        sub_rows AS (
            SELECT CASE WHEN id IS NULL THEN 'create_subcategory' ELSE 'update_subcategory' END AS action,
                   model_key AS item, CAST(id AS VARCHAR) AS target_id, version AS target_version,
                   model_key, NULL AS reason,
                   {_differing(_entries(
                       plan, 'model',
                       f"CASE WHEN id IS NULL THEN NULL WHEN {{name}} IN ({model_keys_kept}) THEN fields[{{name}}] ELSE h{{i}} END",
                       "fields[{name}]"))}
            FROM sub
        ),
        pairs AS (
            SELECT m.ci_id, m.match, m.ambiguity, d.model_key AS desired_key, d.fields,
                   d.identify_value AS desired_identify, {desired_label} AS desired_label, h.*
            FROM matched m JOIN d USING (ci_id) JOIN dm USING (model_key)
            LEFT JOIN h ON h.id = m.asset_id
        ),
        create_rows AS (
            SELECT 'create_asset' AS action, ci_id AS item, NULL AS target_id,
                   NULL::BIGINT AS target_version, desired_key AS model_key, NULL AS reason,
                   unnest(list_filter({_entries(plan, 'asset', 'NULL', 'fields[{name}]')} || [
                       {{'field': 'subcategory', 'old': NULL, 'new': desired_label}},
                       {{'field': 'stockroom', 'old': NULL, 'new': {lit(default_stockroom)}}},
                       {{'field': 'external_ref', 'old': NULL, 'new': 'c2:' || ci_id}}],
                       lambda x: x.new IS NOT NULL), recursive := true)
            FROM pairs WHERE match = 'new'
        ),
        field_rows AS (
            SELECT 'update_asset' AS action, ci_id AS item, CAST(id AS VARCHAR) AS target_id,
                   version AS target_version, desired_key AS model_key, NULL AS reason,
                   {_differing(_entries(plan, 'asset', 'h{i}', 'fields[{name}]'))}
            FROM pairs WHERE match IN ('linked', 'identified')
        ),
        move_rows AS (
            SELECT 'move_asset' AS action, ci_id AS item, CAST(id AS VARCHAR) AS target_id,
                   version AS target_version, desired_key AS model_key,
                   'its maker, model or description changed in C2 ITSM' AS reason,
                   'subcategory' AS field, model_label AS old, desired_label AS new
            FROM pairs WHERE match IN ('linked', 'identified') AND model_key IS DISTINCT FROM desired_key
        ),
        link_rows AS (
            SELECT 'link_asset' AS action, ci_id AS item, CAST(id AS VARCHAR) AS target_id,
                   version AS target_version, desired_key AS model_key,
                   'identify_by matched ' || {quoted('desired_identify')} AS reason,
                   'external_ref' AS field, NULL AS old, 'c2:' || ci_id AS new
            FROM pairs WHERE match = 'identified'
        ),
        changed AS (SELECT item FROM field_rows UNION SELECT item FROM move_rows UNION SELECT item FROM link_rows),
        unchanged_rows AS (
            SELECT 'unchanged' AS action, ci_id AS item, CAST(id AS VARCHAR) AS target_id,
                   version AS target_version, desired_key AS model_key, NULL AS reason,
                   NULL AS field, NULL AS old, NULL AS new
            FROM pairs WHERE match = 'linked' AND ci_id NOT IN (SELECT item FROM changed)
        ),
        ambiguous_rows AS (
            SELECT 'skip' AS action, ci_id AS item, NULL AS target_id, NULL::BIGINT AS target_version,
                   desired_key AS model_key, ambiguity AS reason, {lit(plan.identify_source or '')} AS field,
                   NULL AS old, desired_identify AS new
            FROM pairs WHERE match = 'ambiguous'
        ),
        rejected_rows AS (
            SELECT 'skip' AS action, ci_id AS item, NULL AS target_id, NULL::BIGINT AS target_version,
                   NULL AS model_key, reason, field, NULL AS old, value AS new
            FROM rejected_ci WHERE category_key = {key}
        ),
        gone_rows AS (
            SELECT CASE WHEN {lit(plan.on_missing)} = 'retire' THEN 'retire_asset' ELSE 'missing' END AS action,
                   h.c2_ref AS item, CAST(h.id AS VARCHAR) AS target_id, h.version AS target_version,
                   h.model_key, {gone_reason} AS reason,
                   'status' AS field, h.status AS old,
                   CASE WHEN {lit(plan.on_missing)} = 'retire' THEN 'retired' END AS new
            FROM h LEFT JOIN (
                SELECT ci_id, arg_max(status, modified_at) AS status FROM c2_ci
                WHERE category_key = {key} GROUP BY ci_id) c ON c.ci_id = h.c2_ref
            WHERE h.c2_ref IS NOT NULL AND h.c2_ref NOT IN (SELECT ci_id FROM d)
              AND h.status IS DISTINCT FROM 'retired'
              AND (c.status = 'retired' OR (c.ci_id IS NULL AND {str(full_read).lower()}))
        ),
        all_rows AS (
            SELECT action, item, target_id, target_version, model_key, field, old, new, reason FROM sub_rows
            UNION ALL BY NAME SELECT * FROM create_rows
            UNION ALL BY NAME SELECT * FROM link_rows
            UNION ALL BY NAME SELECT * FROM field_rows
            UNION ALL BY NAME SELECT * FROM move_rows
            UNION ALL BY NAME SELECT * FROM gone_rows
            UNION ALL BY NAME SELECT * FROM unchanged_rows
            UNION ALL BY NAME SELECT * FROM ambiguous_rows
            UNION ALL BY NAME SELECT * FROM rejected_rows
        )
        SELECT {key} AS category_key, {lit(DIRECTION)} AS direction, action, item, target_id,
               target_version, model_key, field, old, new, reason
        FROM all_rows
        ORDER BY array_position({list(ACTIONS)!r}, action), item, field
    """


@dataclass(frozen=True)
class Summary:
    """What a change set amounts to, per item (not per field), and the guard's figures."""

    counts: dict[str, int]
    linked: int
    risky: int  # retires and moves: the changes the guard weighs

    @property
    def fraction(self) -> float:
        return self.risky / self.linked if self.linked else 0.0


def summarize(changes: pl.DataFrame, linked: int) -> Summary:
    per_item = changes.select("action", "item").unique()
    counts = {a: 0 for a in ACTIONS} | dict(per_item.group_by("action").len().iter_rows())
    return Summary(counts=counts, linked=linked, risky=counts["retire_asset"] + counts["move_asset"])


@dataclass(frozen=True)
class Guard:
    """The spec's change-size guard: hold back a change set that looks like a wipe."""

    max_fraction: float
    ci_count: int
    previous_ci_count: int | None

    def refusal(self, summary: Summary) -> str | None:
        """Why the writeback must be held back, in words with the numbers, or None."""
        if self.ci_count == 0 and self.previous_ci_count:
            return (
                f"C2 ITSM answered with an empty category where the last snapshot had "
                f"{self.previous_ci_count} CIs; nothing was written"
            )
        if summary.fraction > self.max_fraction:
            return (
                f"the change set would retire or move {summary.risky} of {summary.linked} linked "
                f"assets ({summary.fraction:.0%}), more than max_change_fraction "
                f"{self.max_fraction:.0%}; nothing was written"
            )
        return None
