"""The inverse of what one run applied, checked against what the systems hold now.

Old values go back, moves go back, retired items are reactivated, created items are retired
(never deleted). An item is undone only if it still holds exactly what the run wrote and no
later run changed it; otherwise someone has worked on it since, and it is left alone as a
`conflict` row with the reason. Links and subcategories are kept and said so: a link records
that two items are one, and a subcategory is shared by every asset of its model.
"""

from __future__ import annotations

from hector_sync.config import SYSTEM_NAMES, TO_HECTOR, Direction
from hector_sync.plans import APPLIED_OUTCOMES
from hector_sync.reconcile.changes import ROW_COLUMNS
from hector_sync.reconcile.mapping import CategoryPlan
from hector_sync.reconcile.match import hector_assets, hector_models
from hector_sync.reconcile.normalize import lit, normalized_cis, quoted

INVERSE = {
    "create_asset": "retire_asset", "create_ci": "retire_ci",
    "retire_asset": "reactivate_asset", "retire_ci": "reactivate_ci",
    "reactivate_asset": "retire_asset", "reactivate_ci": "retire_ci",
    "update_asset": "update_asset", "update_ci": "update_ci", "move_asset": "move_asset",
}
KEPT = {
    "link_asset": "the link is kept: it records that the CI and the asset are one item",
    "link_ci": "the link is kept: it records that the asset and the CI are one item",
    "unlink_asset": "the unlink is kept: an operator took the pair apart (hector-sync unlink)",
    "unlink_ci": "the unlink is kept: an operator took the pair apart (hector-sync unlink)",
    "create_subcategory": "the subcategory is kept: undo retires the assets made in it, and Hector keeps models",
    "update_subcategory": "the subcategory is kept as it is: every asset of the model shares it",
}
CREATES = ("create_asset", "create_ci")
ORDER = "action, item, field"  # of an undo change set's rows


def _current(plan: CategoryPlan, direction: Direction) -> tuple[str, str]:
    """SQL of the targets as the systems hold them now: (target_id, version, status,
    model_label) and the long (target_id, field, value) in the change rows' vocabulary
    (Hector target names toward Hector, C2 field names toward C2 ITSM, and `status`)."""
    if direction is TO_HECTOR:
        source, fields = hector_assets(plan), [(t.name, f"h{i}") for i, t in enumerate(plan.targets) if t.scope == "asset"]
        head = "SELECT CAST(id AS VARCHAR) AS target_id, version, status, model_label FROM src"
    else:
        source, fields = normalized_cis(plan), [(t.source, f"v{i}") for i, t in enumerate(plan.targets)]
        head = "SELECT ci_id AS target_id, version, status, NULL AS model_label FROM src"
    id_column = "CAST(id AS VARCHAR)" if direction is TO_HECTOR else "ci_id"
    values = " UNION ".join(
        f"SELECT {id_column} AS target_id, {lit(name)} AS field, CAST({column} AS VARCHAR) AS value FROM src"
        for name, column in (dict(fields) | {"status": "status"}).items()
    )
    return f"WITH src AS ({source}) {head}", f"WITH src AS ({source}) {values}"


def undo_change_set(plan: CategoryPlan, direction: Direction, run_id: str) -> str:
    """SQL for the change rows that take back run `run_id` in this category and direction,
    over the current snapshots and `change_history` (their requests and ORDER come after, from
    `reconcile.requests`)."""
    key, run, way = lit(plan.key), lit(run_id), lit(direction.value)
    head, values = _current(plan, direction)
    applied = ", ".join(lit(o) for o in APPLIED_OUTCOMES)  # what changed something a run can take back
    update = "update_asset" if direction is TO_HECTOR else "update_ci"
    inverse = " ".join(f"WHEN {lit(a)} THEN {lit(b)}" for a, b in (INVERSE | {"revert_drift": update}).items())
    kept = " ".join(f"WHEN {lit(a)} THEN {lit(b)}" for a, b in KEPT.items())
    invertible = ", ".join(lit(a) for a in [*INVERSE, "revert_drift"])
    creates = ", ".join(lit(a) for a in CREATES)
    undo_of = lit(f"undo of run {run_id}")
    return f"""
        WITH done AS (
            SELECT * FROM change_history
            WHERE run_id = {run} AND category_key = {key} AND direction = {way} AND outcome IN ({applied})
        ),
        later AS (
            SELECT target_id, arg_min(run_id, recorded_at) AS run_id FROM change_history
            WHERE category_key = {key} AND direction = {way} AND outcome IN ({applied}) AND run_id <> {run}
              AND recorded_at > (SELECT max(recorded_at) FROM done)
              AND target_id IN (SELECT target_id FROM done)
            GROUP BY target_id
        ),
        cur AS ({head}),
        vals AS ({values}),
        hm AS ({hector_models(plan) if direction is TO_HECTOR else "SELECT NULL AS model_key, NULL AS model_label, NULL AS id WHERE false"}),
        checked AS (
            SELECT d.*, c.version AS cur_version, c.status AS cur_status,
                   CASE WHEN c.target_id IS NULL THEN {lit(f'it is no longer listed in {SYSTEM_NAMES[direction.target]}')}
                        WHEN l.target_id IS NOT NULL THEN 'run ' || l.run_id || ' changed it after this run'
                        WHEN d.action IN ('retire_asset', 'retire_ci') AND c.status IS DISTINCT FROM 'retired'
                        THEN 'its status is now ' || {quoted('c.status')} || ', no longer retired'
                        WHEN d.action IN ('reactivate_asset', 'reactivate_ci') AND c.status IS NOT DISTINCT FROM 'retired'
                        THEN 'it is retired again'
                        WHEN d.action IN ({creates}) AND c.status IS NOT DISTINCT FROM 'retired'
                        THEN 'it is retired already'
                        WHEN d.action = 'move_asset' AND c.model_label IS DISTINCT FROM d.new
                        THEN 'its subcategory is now ' || {quoted('c.model_label')} || ', not ' || {quoted('d.new')}
                        WHEN d.action = 'move_asset' AND d.old NOT IN (SELECT model_label FROM hm)
                        THEN 'the subcategory it came from, ' || {quoted('d.old')} || ', is gone'
                        WHEN v.field IS NOT NULL AND v.value IS DISTINCT FROM d.new
                        THEN d.field || ' is now ' || coalesce({quoted('v.value')}, 'empty') || ', not '
                             || coalesce({quoted('d.new')}, 'empty') || ' as this run wrote it'
                   END AS why
            FROM done d LEFT JOIN cur c ON c.target_id = d.target_id
            LEFT JOIN vals v ON v.target_id = d.target_id AND v.field = d.field
            LEFT JOIN later l ON l.target_id = d.target_id
            WHERE d.action IN ({invertible})
        ),
        conflicts AS (
            SELECT target_id, any_value(item) AS item, string_agg(DISTINCT why, '; ' ORDER BY why) AS why
            FROM checked WHERE why IS NOT NULL GROUP BY target_id
        ),
        ok AS (SELECT * FROM checked WHERE target_id NOT IN (SELECT target_id FROM conflicts)),
        rows AS (
            SELECT DISTINCT CASE action {inverse} END AS action, item, target_id, cur_version AS target_version,
                   NULL AS model_key, 'status' AS field, cur_status AS old, 'retired' AS new,
                   {undo_of} || ': it was created by that run' AS reason
            FROM ok WHERE action IN ({creates})
            UNION ALL BY NAME
            SELECT CASE WHEN action = 'update_ci' AND field = 'status' THEN 'retire_ci' ELSE CASE action {inverse} END END
                       AS action,
                   item, target_id, cur_version AS target_version,
                   CASE WHEN action = 'move_asset'
                        THEN (SELECT min_by(model_key, id) FROM hm WHERE hm.model_label = ok.old) END AS model_key,
                   field, new AS old, old AS new,
                   {undo_of} || ': ' || field || ' back to ' || coalesce({quoted('old')}, 'empty') AS reason
            FROM ok WHERE action NOT IN ({creates})
            UNION ALL BY NAME
            SELECT 'conflict' AS action, item, target_id, NULL::BIGINT AS target_version, NULL AS model_key,
                   NULL AS field, NULL AS old, NULL AS new,
                   {undo_of} || ': left as it is, because ' || why AS reason
            FROM conflicts
            UNION ALL BY NAME
            SELECT DISTINCT 'skip' AS action, item, target_id, NULL::BIGINT AS target_version, NULL AS model_key,
                   NULL AS field, NULL AS old, NULL AS new, {undo_of} || ': ' || CASE action {kept} END AS reason
            FROM done WHERE action IN ({", ".join(lit(a) for a in KEPT)})
        )
        SELECT {key} AS category_key, {way} AS direction, {", ".join(ROW_COLUMNS)}
        FROM rows
    """
