"""The change set toward Hector: desired models and assets (from the CIs) against Hector's
snapshot, over the pairs of `match.pairs`.

Under `c2_to_hector` every mapped field flows this way and CIs without an asset get one. Under
`per_field` only the fields flowing c2_to_hector are written here, with the drift rule; CIs
without an asset get one only when C2 ITSM owns maker, model and description; there too, an
asset the sync retired comes back (`reactivate_asset`) once its CI is listed active again.
"""

from __future__ import annotations

from hector_sync.reconcile.changes import assemble, differing, entries, tally, with_drift
from hector_sync.config import TO_HECTOR
from hector_sync.reconcile.mapping import MODEL_KEY_FIELDS, CategoryPlan
from hector_sync.reconcile.match import hector_assets, hector_models, pairs
from hector_sync.reconcile.normalize import listed_cis, lit, model_label, quoted

LINK_REASONS = {
    "identified": "'identify_by matched ' || {value}",
    "local": "'C2 ITSM CI created from this asset by an earlier run'",
    "pinned": "'pinned by ' || pinned_by || ' with hector-sync link'",
    "recovered": "'C2 ITSM CI created from this asset by an interrupted run'",
}


def _tag_index(plan: CategoryPlan) -> int | None:
    """The target index of the asset tag when it flows toward Hector (it must be unique there)."""
    return next((i for i, t in enumerate(plan.targets) if t.name == "asset_tag" and t.direction is TO_HECTOR), None)


def _tag_clashes(plan: CategoryPlan, i: int | None) -> str:
    """CTE `clash`: CIs whose asset tag (target `i`, see `_tag_index`) another CI also claims,
    or another asset already holds (`tag` as C2 ITSM holds it); from `paired`.

    Hector keeps asset tags unique in a category (409 otherwise): such a CI is skipped, naming
    who else has the tag, rather than planned into a write Hector would refuse. A CI whose own
    asset holds its tag already is the one holder Hector allows, so only the CIs whose tag is
    new to their asset (1% of a daily sync) are looked up among the assets.
    """
    if i is None:
        return "clash AS (SELECT NULL AS ci_id, NULL AS tag, NULL AS field, NULL AS reason WHERE false)"
    source = plan.targets[i].source
    return f"""
        tag_of AS (
            SELECT ci_id, tag, id, asset_tag FROM paired WHERE tag IS NOT NULL
        ),
        shared_tag AS (  -- counted first: listing the CIs of each of a million tags costs seconds
            SELECT tag, string_agg(ci_id, ', ' ORDER BY ci_id) AS cis FROM tag_of
            WHERE tag IN (SELECT tag FROM tag_of GROUP BY tag HAVING count(*) > 1) GROUP BY tag
        ),
        held_tag AS (
            SELECT t.ci_id, any_value(h.id) AS holder FROM tag_of t
            JOIN h ON h.h{i} = t.tag AND h.id IS DISTINCT FROM t.id
            WHERE t.asset_tag IS DISTINCT FROM t.tag GROUP BY t.ci_id
        ),
        clashing AS MATERIALIZED (  -- found before their raw tags are looked up: else a million are
            SELECT t.ci_id, t.tag, s.cis, k.holder
            FROM tag_of t LEFT JOIN shared_tag s USING (tag) LEFT JOIN held_tag k USING (ci_id)
            WHERE s.cis IS NOT NULL OR k.holder IS NOT NULL
        ),
        clash AS (
            SELECT t.ci_id, CAST(c.r{i} AS VARCHAR) AS tag, {lit(source)} AS field,
                   {lit(source + ' ')} || {quoted('t.tag')} || CASE
                       WHEN t.cis IS NOT NULL THEN ' is also the asset tag of CIs ' || t.cis
                       ELSE ' is already the asset tag of asset ' || t.holder END
                   || '; Hector keeps asset tags unique in a category' AS reason
            FROM clashing t JOIN c USING (ci_id)
        )"""


def _retired_by_sync(plan: CategoryPlan) -> str:
    """CTE `retired_by_sync` (asset_id as text, status_before): the assets of the category whose
    last status change by this tool was a sync retiring them, with the status each had before.

    Only these come back when their CI is active again: an asset a person retired in Hector is
    theirs, and so is one an operator's undo retired, or one the sync already brought back.
    """
    return f"""
        status_history AS (
            SELECT ch.target_id AS asset_id, ch.action, ch.old, pl.kind
            FROM change_history ch LEFT JOIN plan pl ON pl.plan_id = ch.plan_id
            WHERE ch.category_key = {lit(plan.key)} AND ch.direction = {lit(TO_HECTOR.value)}
              AND ch.target_id IS NOT NULL
              AND ((ch.action = 'retire_asset' AND ch.outcome = 'retired')
                   OR (ch.action = 'reactivate_asset' AND ch.outcome = 'reactivated'))
            QUALIFY row_number() OVER (PARTITION BY ch.target_id ORDER BY ch.recorded_at DESC,
                                       ch.action = 'retire_asset') = 1
        ),
        retired_by_sync AS (
            SELECT asset_id, coalesce(nullif(nullif(trim(old), ''), 'retired'), 'in_stock') AS status_before
            FROM status_history WHERE action = 'retire_asset' AND kind IS DISTINCT FROM 'undo'
        )"""


def hector_change_set(plan: CategoryPlan, *, full_read: bool, default_stockroom: str, large: bool = False) -> str:
    """SQL for the whole change set of one category toward Hector.

    `large` (a category of many items) trades planning time for memory: the assets and the
    pairs are read again by each of their readers rather than kept. Planning those readers
    twice costs a small category more than its whole change set (110 ms of 220); keeping a
    million assets and their pairs costs a large one 130 MB."""
    key = lit(plan.key)
    kept_unless_large = "NOT MATERIALIZED" if large else "MATERIALIZED"
    tag = _tag_index(plan)
    tag_value = "" if tag is None else f", fields[{tag + 1}] AS tag"
    tags = "" if tag is None else f", d.tag, h.h{tag} AS asset_tag"  # the CI's, and its asset's
    creates = plan.creates_toward(TO_HECTOR)
    model = tuple(i for i, t in enumerate(plan.targets) if t.scope == "model")
    asset = tuple(i for i, t in enumerate(plan.targets) if t.scope == "asset")
    flowing = set(plan.toward(TO_HECTOR))
    written = plan.written_to_assets()
    # what `pairs` takes of the paired asset: its identity, and one digest of the values written
    paired_asset = "h.id, h.version, h.retired, h.subcategory_id, h.digest"
    kept = ", ".join(lit(k) for k in MODEL_KEY_FIELDS)
    desired_label = model_label(*(f"dm.fields[{plan.index(k) + 1}]" for k in MODEL_KEY_FIELDS))
    gone_reason = (
        "CASE WHEN c.retired THEN 'the CI is retired in C2 ITSM' "
        "ELSE 'the CI is no longer listed in C2 ITSM' END"
    )
    link_reason = "CASE match " + " ".join(
        f"WHEN {lit(m)} THEN {r.format(value=quoted('desired_identify'))}" for m, r in LINK_REASONS.items()
    ) + " END"
    # the pairs whose written values differ, and the CIs to create: the rows of `to_write`
    to_update = "p.id IS NOT NULL AND p.digest IS DISTINCT FROM p.desired_digest"
    to_create = f"p.match = 'new' AND {str(creates).lower()}"
    field_rows = f"""
        SELECT 'update_asset' AS action, p.ci_id AS item, CAST(p.id AS VARCHAR) AS target_id,
               p.version AS target_version, p.desired_key AS model_key, NULL AS reason,
               {differing(entries(plan, written, '{name}', 'v.h{i}', 'p.fields[{i} + 1]'))}
        FROM to_write p JOIN ({hector_assets(plan, whole=False, values=written, models='hm')}) v ON v.id = p.id
        WHERE {to_update}
    """
    return f"""
        WITH dm AS (SELECT * FROM desired_model WHERE category_key = {key}),
        hm AS MATERIALIZED ({hector_models(plan)}),
        h AS {kept_unless_large} (  -- the models' keys and labels stay in hm
            SELECT * EXCLUDE (model_key, model_label)
            FROM ({hector_assets(plan, whole=False, values=() if tag is None else (tag,), digest=True, models='hm')})),
        c AS MATERIALIZED ({listed_cis(plan, raw=() if tag is None else (tag,))}),
        {pairs(plan)},
        d AS (  -- a CI whose asset's ref an unlink removes in this run waits for the next one
            SELECT ci_id, hash(model_key) AS key_hash, identify_value, written_digest AS digest{tag_value}
            FROM desired_asset
            WHERE category_key = {key} AND ci_id NOT IN (SELECT ci_id FROM unlinking)
        ),
        sub AS (
            SELECT dm.model_key, dm.fields, s.id, s.version, s.* EXCLUDE (id, version, model_key)
            FROM dm LEFT JOIN (SELECT * FROM hm QUALIFY row_number() OVER (
                PARTITION BY model_key ORDER BY id) = 1) s USING (model_key)
            WHERE {str(creates).lower()}
        ),
        sub_rows AS (
            SELECT 'create_subcategory' AS action, model_key AS item, NULL AS target_id,
                   NULL::BIGINT AS target_version, model_key, NULL AS reason,
                   {differing(entries(plan, model, '{name}', 'NULL', 'fields[{i} + 1]'))}
            FROM sub WHERE id IS NULL
            UNION ALL BY NAME
            SELECT 'update_subcategory' AS action, model_key AS item, CAST(id AS VARCHAR) AS target_id,
                   version AS target_version, model_key, NULL AS reason,
                   {differing(entries(
                       plan, tuple(i for i in model if i in flowing), '{name}',
                       f"CASE WHEN {{name}} IN ({kept}) THEN fields[{{i}} + 1] ELSE h{{i}} END", 'fields[{i} + 1]'))}
            FROM sub WHERE id IS NOT NULL
        ),
        paired AS MATERIALIZED (  -- narrow: what every pair carries is a million times over
            SELECT d.ci_id, coalesce(p.match, CASE WHEN a.ci_id IS NOT NULL THEN 'ambiguous' ELSE 'new' END) AS match,
                   p.pinned_by, a.ambiguity, d.key_hash, d.identify_value AS desired_identify,
                   d.digest AS desired_digest{tags}, {paired_asset}
            FROM d LEFT JOIN pair p USING (ci_id) LEFT JOIN ci_ambiguity a USING (ci_id)
            LEFT JOIN h ON h.id = p.asset_id
        ),
        {_tag_clashes(plan, tag)},
        label AS (SELECT model_key AS desired_key, hash(model_key) AS key_hash, {desired_label} AS desired_label FROM dm),
        pairs AS {kept_unless_large} (  -- without the CIs whose tag clashes, with the models' keys and labels
            SELECT p.* EXCLUDE (key_hash), l.desired_key, l.desired_label FROM paired p JOIN label l USING (key_hash)
            WHERE p.ci_id NOT IN (SELECT ci_id FROM clash)
        ),
        to_write AS MATERIALIZED (  -- the pairs to update or create with their desired values: one
            -- scan of desired_asset, whose value lists cost a million CIs 0.2 s to read
            SELECT p.*, da.fields FROM pairs p JOIN desired_asset da ON da.category_key = {key} AND da.ci_id = p.ci_id
            WHERE ({to_update}) OR ({to_create})
        ),
        create_rows AS (
            SELECT 'create_asset' AS action, ci_id AS item, NULL AS target_id,
                   NULL::BIGINT AS target_version, desired_key AS model_key, NULL AS reason,
                   unnest(list_filter({entries(plan, asset, '{name}', 'NULL', 'fields[{i} + 1]')} || [
                       {{'field': 'subcategory', 'old': NULL, 'new': desired_label}},
                       {{'field': 'stockroom', 'old': NULL, 'new': {lit(default_stockroom)}}},
                       {{'field': 'external_ref', 'old': NULL, 'new': 'c2:' || ci_id}}],
                       lambda x: x.new IS NOT NULL), recursive := true)
            FROM to_write p WHERE {to_create}
        ),
        update_rows AS ({with_drift(field_rows, plan, TO_HECTOR, ci_column='item')}),
        move_rows AS (
            SELECT 'move_asset' AS action, p.ci_id AS item, CAST(p.id AS VARCHAR) AS target_id,
                   p.version AS target_version, desired_key AS model_key,
                   'its maker, model or description changed in C2 ITSM' AS reason,
                   'subcategory' AS field, hm.model_label AS old, desired_label AS new
            FROM pairs p LEFT JOIN hm ON hm.id = p.subcategory_id
            WHERE p.id IS NOT NULL AND hm.model_key IS DISTINCT FROM desired_key AND {str(creates).lower()}
        ),
        link_rows AS (
            SELECT 'link_asset' AS action, ci_id AS item, CAST(id AS VARCHAR) AS target_id,
                   version AS target_version, desired_key AS model_key, {link_reason} AS reason,
                   'external_ref' AS field, NULL AS old, 'c2:' || ci_id AS new
            FROM pairs WHERE match IN ('identified', 'local', 'pinned', 'recovered')
        ),
        unlink_rows AS (
            SELECT 'unlink_asset' AS action, ci_id AS item, CAST(asset_id AS VARCHAR) AS target_id,
                   version AS target_version, NULL AS model_key, reason,
                   'external_ref' AS field, 'c2:' || ci_id AS old, NULL AS new
            FROM unlinking
        ),
        {_retired_by_sync(plan)},
        reactivate_rows AS (
            SELECT 'reactivate_asset' AS action, p.ci_id AS item, CAST(p.id AS VARCHAR) AS target_id,
                   p.version AS target_version, p.desired_key AS model_key,
                   'the CI is active in C2 ITSM again, and this asset was retired by the sync' AS reason,
                   'status' AS field, 'retired' AS old, s.status_before AS new
            FROM pairs p JOIN retired_by_sync s ON s.asset_id = CAST(p.id AS VARCHAR)
            WHERE p.id IS NOT NULL AND p.retired AND {str(creates).lower()}
        ),
        changed AS (SELECT item FROM update_rows UNION SELECT item FROM move_rows UNION SELECT item FROM link_rows
                    UNION SELECT item FROM reactivate_rows),
        unchanged_rows AS ({tally("pairs WHERE id IS NOT NULL AND ci_id NOT IN (SELECT item FROM changed)")}),
        skip_rows AS (
            SELECT 'skip' AS action, ci_id AS item, NULL AS target_id, NULL::BIGINT AS target_version,
                   desired_key AS model_key, ambiguity AS reason, {lit(plan.identify_source or '')} AS field,
                   NULL AS old, desired_identify AS new
            FROM pairs WHERE match = 'ambiguous'
            UNION ALL BY NAME
            SELECT 'skip' AS action, ci_id AS item, desired_key AS model_key,
                   'the CI has no asset, and only Hector creates items in this category '
                   || '(it owns maker, model and description under per_field)' AS reason
            FROM pairs WHERE match = 'new' AND NOT {str(creates).lower()}
            UNION ALL BY NAME
            SELECT 'skip' AS action, ci_id AS item, NULL AS target_id, NULL::BIGINT AS target_version,
                   NULL AS model_key, reason, field, NULL AS old, value AS new
            FROM rejected_ci WHERE category_key = {key}
            UNION ALL BY NAME
            SELECT 'skip' AS action, ci_id AS item, reason, field, tag AS new FROM clash
        ),
        gone AS MATERIALIZED (  -- the few linked assets whose CI is not desired, before finding why
            SELECT id, version, status, c2_ref, subcategory_id FROM h
            WHERE c2_ref IS NOT NULL AND c2_ref NOT IN (SELECT ci_id FROM paired)
              AND NOT retired AND {str(creates).lower()} AND id NOT IN (SELECT asset_id FROM unlinking)
        ),
        gone_rows AS (
            SELECT CASE WHEN {lit(plan.on_missing)} = 'retire' THEN 'retire_asset' ELSE 'missing' END AS action,
                   g.c2_ref AS item, CAST(g.id AS VARCHAR) AS target_id, g.version AS target_version,
                   hm.model_key, {gone_reason} AS reason,
                   'status' AS field, g.status AS old,
                   CASE WHEN {lit(plan.on_missing)} = 'retire' THEN 'retired' END AS new
            FROM gone g LEFT JOIN c ON c.ci_id = g.c2_ref LEFT JOIN hm ON hm.id = g.subcategory_id
            WHERE c.retired OR (c.ci_id IS NULL AND {str(full_read).lower()})
        ),
        {assemble(plan, TO_HECTOR, ["sub_rows", "create_rows", "link_rows", "unlink_rows", "update_rows", "move_rows",
                                    "gone_rows", "reactivate_rows", "unchanged_rows", "skip_rows"])}
    """
