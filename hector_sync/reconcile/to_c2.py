"""The change set toward C2 ITSM: Hector's assets (model fields through their subcategory) as
the CIs C2 ITSM should hold, against its snapshot, over the pairs of `match.pairs`.

Under `hector_to_c2` every mapped field flows this way, assets without a CI get one (named from
the title) and then the external ref to it. Under `per_field` only the fields flowing
hector_to_c2 are written here, with the drift rule; assets without a CI get one only when
Hector owns maker, model and description.
"""

from __future__ import annotations

from hector_sync.config import TO_C2
from hector_sync.reconcile.changes import assemble, differing, differs, entries, tally, with_drift
from hector_sync.reconcile.mapping import NAME_PSEUDO_FIELD, CategoryPlan
from hector_sync.reconcile.match import hector_assets, hector_models, pairs
from hector_sync.reconcile.normalize import EXPECTED, lit, normalized_cis, quoted


def _problems(plan: CategoryPlan) -> dict[int, tuple[str, str]]:
    """Per target bound for C2 ITSM: (condition on `h`, reason) under which an asset is skipped."""
    found: dict[int, tuple[str, str]] = {}
    for i in plan.toward(TO_C2):
        t = plan.targets[i]
        if t.source == NAME_PSEUDO_FIELD:
            found[i] = (f"h{i} IS NULL", lit(f"{t.name} is empty, and C2 ITSM needs a name for the CI"))
        elif t.kind != "text":
            reason = f"{lit(t.name + ' ')} || {quoted(f'hr{i}')} || {lit(f' is not {EXPECTED[t.kind]}, which C2 field {t.source} takes')}"
            found[i] = (f"h{i} IS NULL AND hr{i} IS NOT NULL", reason)
    return found


def rejected_assets(plan: CategoryPlan) -> str:
    """Active assets that cannot become or update a CI, one row per offending field."""
    parts = [
        f"SELECT id AS asset_id, {lit(plan.targets[i].name)} AS field, hr{i} AS value, {reason} AS reason "
        f"FROM h WHERE NOT retired AND ({cond})"
        for i, (cond, reason) in _problems(plan).items()
    ]
    union = " UNION ALL ".join(parts) or "SELECT NULL::BIGINT AS asset_id, NULL AS field, NULL AS value, NULL AS reason WHERE false"
    return f"""
        WITH h AS ({hector_assets(plan)})
        SELECT {lit(plan.key)} AS category_key, asset_id, field, value, reason FROM ({union})
        ORDER BY asset_id, field
    """


def desired_cis(plan: CategoryPlan) -> str:
    """Each active, valid asset as the CI C2 ITSM should hold (values keyed by target name)."""
    fields = "MAP {" + ", ".join(f"{lit(t.name)}: h{i}" for i, t in enumerate(plan.targets)) + "}"
    rejected = " OR ".join(f"({cond})" for cond, _ in _problems(plan).values()) or "false"
    return f"""
        WITH h AS ({hector_assets(plan)})
        SELECT {lit(plan.key)} AS category_key, id AS asset_id, title, identify_value, updated_at,
               {fields} AS fields
        FROM h WHERE NOT retired AND NOT ({rejected})
        ORDER BY id
    """


def _names(plan: CategoryPlan) -> str:
    """C2 change rows name fields as C2 ITSM does; the baseline knows them by target name."""
    rows = [f"({lit(plan.targets[i].source)}, {lit(plan.targets[i].name)})" for i in plan.toward(TO_C2)]
    return f"SELECT * FROM (VALUES {', '.join(rows)}) v(field, name)" if rows else "SELECT NULL AS field, NULL AS name WHERE false"


def c2_change_set(plan: CategoryPlan, *, full_read: bool) -> str:
    """SQL for the whole change set of one category toward C2 ITSM; `full_read` is Hector's."""
    key = lit(plan.key)
    creates = str(plan.creates_toward(TO_C2)).lower()
    # The external ref is a Hector write: the Hector change set puts (or, for an unlink, removes)
    # it wherever there is one (so the two writebacks never PATCH one asset in one run); only
    # hector_to_c2 does it here.
    links = str(plan.direction is TO_C2).lower()
    every = tuple(range(len(plan.targets)))
    flowing = plan.toward(TO_C2)
    retire = plan.on_missing == "retire"
    gone_action = lit("retire_ci" if retire else "missing")
    gone_new = "'retired'" if retire else "NULL"
    field_rows = f"""
        SELECT 'update_ci' AS action, CAST(asset_id AS VARCHAR) AS item, ci_id AS target_id,
               ci_version AS target_version, NULL AS reason,
               {differing(entries(plan, flowing, '{source}', 'v{i}', 'fields[{name}]'))}
        FROM pairs WHERE ci_id IS NOT NULL AND {differs(plan, flowing, 'v{i}', 'fields[{name}]')}
    """
    return f"""
        WITH hm AS MATERIALIZED ({hector_models(plan)}),
        h AS MATERIALIZED ({hector_assets(plan, models='hm')}),
        c AS MATERIALIZED ({normalized_cis(plan)}),
        {pairs(plan)},
        da AS (  -- an asset whose ref an unlink removes in this run waits for the next one
            SELECT * FROM desired_ci WHERE category_key = {key} AND asset_id NOT IN (SELECT asset_id FROM unlinking)
        ),
        pairs AS (
            SELECT da.asset_id, da.fields, da.identify_value AS desired_identify, h.c2_ref, h.version AS asset_version,
                   CASE WHEN p.match IS NOT NULL THEN p.match WHEN h.c2_ref IS NOT NULL THEN 'dangling'
                        WHEN a.asset_id IS NOT NULL THEN 'ambiguous' ELSE 'new' END AS match,
                   a.ambiguity, p.pinned_by, c.* EXCLUDE (version), c.version AS ci_version
            FROM da JOIN h ON h.id = da.asset_id LEFT JOIN pair p ON p.asset_id = da.asset_id
            LEFT JOIN asset_ambiguity a ON a.asset_id = da.asset_id LEFT JOIN c ON c.ci_id = p.ci_id
        ),
        create_rows AS (
            SELECT 'create_ci' AS action, CAST(asset_id AS VARCHAR) AS item, NULL AS target_id,
                   NULL::BIGINT AS target_version, NULL AS reason,
                   unnest(list_filter({entries(plan, every, '{source}', 'NULL', 'fields[{name}]')},
                       lambda x: x.new IS NOT NULL), recursive := true)
            FROM pairs WHERE match = 'new' AND {creates}
        ),
        link_rows AS (  -- a PATCH of the asset (its external ref): its If-Match is the asset's version
            SELECT 'link_ci' AS action, CAST(asset_id AS VARCHAR) AS item, ci_id AS target_id,
                   asset_version AS target_version,
                   CASE match WHEN 'identified' THEN 'identify_by matched ' || {quoted('desired_identify')}
                              WHEN 'local' THEN 'created from this asset; its external ref was not written yet'
                              WHEN 'pinned' THEN 'pinned by ' || pinned_by || ' with hector-sync link'
                              ELSE 'created from this asset by an interrupted run, found again by its name' END AS reason,
                   'external_ref' AS field, NULL AS old, 'c2:' || ci_id AS new
            FROM pairs WHERE match IN ('identified', 'local', 'pinned', 'recovered') AND {links}
        ),
        unlink_rows AS (  -- a PATCH of the asset too, under its version like a link
            SELECT 'unlink_ci' AS action, CAST(asset_id AS VARCHAR) AS item, ci_id AS target_id,
                   version AS target_version, reason,
                   'external_ref' AS field, 'c2:' || ci_id AS old, NULL AS new
            FROM unlinking WHERE {links}
        ),
        update_rows AS ({with_drift(field_rows, plan, TO_C2, ci_column='target_id', names=_names(plan))}),
        reactivate_rows AS (
            SELECT 'update_ci' AS action, CAST(asset_id AS VARCHAR) AS item, ci_id AS target_id,
                   ci_version AS target_version, 'the asset is active in Hector' AS reason,
                   'status' AS field, 'retired' AS old, 'active' AS new
            FROM pairs WHERE ci_id IS NOT NULL AND retired AND {creates}
        ),
        changed AS (SELECT item FROM update_rows UNION SELECT item FROM link_rows UNION SELECT item FROM reactivate_rows),
        unchanged_rows AS ({tally(
            "pairs WHERE ci_id IS NOT NULL AND CAST(asset_id AS VARCHAR) NOT IN (SELECT item FROM changed)")}),
        skip_rows AS (
            SELECT 'skip' AS action, CAST(asset_id AS VARCHAR) AS item, ambiguity AS reason,
                   {lit((plan.identify_target or '').removeprefix('attributes.'))} AS field, desired_identify AS new
            FROM pairs WHERE match = 'ambiguous'
            UNION ALL BY NAME
            SELECT 'skip' AS action, CAST(asset_id AS VARCHAR) AS item, 'external_ref' AS field, 'c2:' || c2_ref AS new,
                   'its external ref names CI ' || c2_ref || ', which C2 ITSM does not list in this category '
                   || 'or which another asset already holds; correct or remove the ref in Hector' AS reason
            FROM pairs WHERE match = 'dangling'
            UNION ALL BY NAME
            SELECT 'skip' AS action, CAST(asset_id AS VARCHAR) AS item,
                   'the asset has no CI, and only C2 ITSM creates items in this category '
                   || '(it owns maker, model and description under per_field)' AS reason
            FROM pairs WHERE match = 'new' AND NOT {creates}
            UNION ALL BY NAME
            SELECT 'skip' AS action, CAST(asset_id AS VARCHAR) AS item, reason, field, value AS new
            FROM rejected_asset WHERE category_key = {key}
        ),
        gone_rows AS (
            SELECT {gone_action} AS action, CAST(h.id AS VARCHAR) AS item, c.ci_id AS target_id,
                   c.version AS target_version, 'the asset is retired in Hector' AS reason,
                   'status' AS field, c.status AS old, {gone_new} AS new
            FROM pair p JOIN h ON h.id = p.asset_id JOIN c ON c.ci_id = p.ci_id
            WHERE h.retired AND NOT c.retired AND {creates}
            UNION ALL BY NAME
            SELECT {gone_action} AS action, CAST(l.asset_id AS VARCHAR) AS item, c.ci_id AS target_id,
                   c.version AS target_version, 'the asset is no longer listed in the Hector category' AS reason,
                   'status' AS field, c.status AS old, {gone_new} AS new
            FROM link l JOIN c ON c.ci_id = l.ci_id
            WHERE l.category_key = {key} AND l.asset_id NOT IN (SELECT id FROM h) AND NOT c.retired
              AND {creates} AND {str(full_read).lower()}
        ),
        {assemble(plan, TO_C2, ["create_rows", "link_rows", "unlink_rows", "update_rows", "reactivate_rows",
                                "gone_rows",
                                "unchanged_rows", "skip_rows"])}
    """
