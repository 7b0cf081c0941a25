"""Which Hector asset is each CI's: the external ref first, then `identify_by`, never a guess.

Following the identification rules of a CMDB reconciliation engine: a strong identifier (the
`c2` external ref) wins; a weak one (`identify_by`) links only when it names exactly one
unlinked asset and that asset is named by exactly one CI; anything else is ambiguous and
reported, because linking the wrong asset is worse than linking none.
"""

from __future__ import annotations

from hector_sync.reconcile.mapping import ATTRIBUTE_PREFIX, CategoryPlan, Target
from hector_sync.reconcile.normalize import canon, lit, model_key, model_label, quoted, trimmed


def hector_column(target: Target) -> str:
    """Where a target's value sits in the Hector snapshot tables."""
    return f"attributes[{lit(target.attribute)}]" if target.attribute else f'"{target.name}"'


def hector_models(plan: CategoryPlan) -> str:
    """Hector's subcategories of the category with their identity and canonical values."""
    values = ", ".join(
        f"{canon(hector_column(t), t.kind)} AS h{i}" for i, t in enumerate(plan.targets) if t.scope == "model"
    )
    keys = [trimmed(c) for c in ("maker", "model", "description")]
    return f"""
        SELECT id, version, {model_key(*keys)} AS model_key, {model_label(*keys)} AS model_label,
               {values or 'NULL AS none'}
        FROM hector_subcategory WHERE category_key = {lit(plan.key)}
    """


def hector_assets(plan: CategoryPlan) -> str:
    """Hector's assets of the category with their model identity and canonical values."""
    values = ", ".join(
        f"{canon('a.' + hector_column(t), t.kind)} AS h{i}"
        for i, t in enumerate(plan.targets) if t.scope == "asset"
    )
    identify = "NULL"
    if plan.identify_target:
        name = plan.identify_target.removeprefix(ATTRIBUTE_PREFIX)
        column = f"attributes[{lit(name)}]" if name != plan.identify_target else f'"{name}"'
        identify = f"lower({trimmed('a.' + column)})"
    return f"""
        SELECT a.id, a.version, a.status, a.c2_ref, a.attributes, a.external_refs,
               m.model_key, m.model_label, {identify} AS identify_value, {values or 'NULL AS none'}
        FROM hector_asset a LEFT JOIN ({hector_models(plan)}) m ON m.id = a.subcategory_id
        WHERE a.category_key = {lit(plan.key)}
    """


def matches() -> str:
    """Each desired CI with its asset: `match` is linked, identified, ambiguous or new.

    Expects CTEs `d` (desired assets) and `h` (hector_assets) in scope.
    """
    return f"""
        linked AS (
            SELECT d.ci_id, arg_min(h.id, h.id) AS asset_id FROM d JOIN h ON h.c2_ref = d.ci_id
            GROUP BY d.ci_id
        ), candidates AS (
            SELECT d.ci_id, h.id AS asset_id, d.identify_value
            FROM d JOIN h ON h.c2_ref IS NULL AND h.identify_value = d.identify_value
            WHERE d.ci_id NOT IN (SELECT ci_id FROM linked)
        ), candidate_counts AS (
            SELECT ci_id, asset_id, identify_value,
                   count(*) OVER (PARTITION BY ci_id) AS assets_per_ci,
                   count(*) OVER (PARTITION BY asset_id) AS cis_per_asset,
                   string_agg(CAST(asset_id AS VARCHAR), ', ' ORDER BY asset_id)
                       OVER (PARTITION BY ci_id) AS asset_ids,
                   string_agg(ci_id, ', ' ORDER BY ci_id) OVER (PARTITION BY asset_id) AS ci_ids
            FROM candidates
        ), identified AS (
            SELECT ci_id, asset_id FROM candidate_counts WHERE assets_per_ci = 1 AND cis_per_asset = 1
        ), ambiguous AS (
            SELECT ci_id, any_value(identify_value) AS identify_value,
                   any_value(asset_ids) AS asset_ids, max(cis_per_asset) AS cis, any_value(ci_ids) AS ci_ids
            FROM candidate_counts WHERE assets_per_ci > 1 OR cis_per_asset > 1 GROUP BY ci_id
        ), matched AS (
            SELECT d.ci_id,
                   coalesce(l.asset_id, i.asset_id) AS asset_id,
                   CASE WHEN l.asset_id IS NOT NULL THEN 'linked'
                        WHEN i.asset_id IS NOT NULL THEN 'identified'
                        WHEN a.ci_id IS NOT NULL THEN 'ambiguous' ELSE 'new' END AS match,
                   CASE WHEN a.cis > 1 THEN 'identify_by value ' || {quoted('a.identify_value')}
                            || ' is shared by CIs ' || a.ci_ids || ' and matches asset ' || a.asset_ids
                        WHEN a.ci_id IS NOT NULL THEN 'identify_by value ' || {quoted('a.identify_value')}
                            || ' matches several unlinked assets: ' || a.asset_ids END AS ambiguity
            FROM d LEFT JOIN linked l USING (ci_id) LEFT JOIN identified i USING (ci_id)
                   LEFT JOIN ambiguous a USING (ci_id)
        )
    """
