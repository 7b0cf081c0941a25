"""Which CI and which Hector asset are one item: the external ref first, then our own records
of creates, then `identify_by`, never a guess.

Following the identification rules of a CMDB reconciliation engine: a strong identifier (the
`c2` external ref on the asset) wins; next come the local link (a CI this tool created, or a
pair an operator pinned with `hector-sync link`, see `hector_sync.held`) and the journal of CI
creates whose answer was lost (both written by this tool, see `hector_sync.store`); a weak identifier
(`identify_by`) links only when it names exactly one unclaimed asset and that asset is named by
exactly one unclaimed CI; anything else is ambiguous and reported, because linking the wrong
asset is worse than linking none. Both directions read the same `pairs()`, so they agree.

A pair an operator unlinked (`hector-sync unlink`) whose asset still carries the CI's ref is no
pair: the sync removes the ref, and matches neither item otherwise until a read shows it gone.
"""

from __future__ import annotations

import hashlib

from hector_sync.reconcile.mapping import ATTRIBUTE_PREFIX, MODEL_KEY_FIELDS, CategoryPlan, Target
from hector_sync.reconcile.normalize import canon, lit, model_key, model_label, quoted, trimmed, typed, written_digest

# A CI created from a journalled intent shows a modified_at at or after the intent, give or
# take the clock difference between us and C2 ITSM.
CLOCK_SKEW = "INTERVAL 10 MINUTE"


def hector_column(target: Target) -> str:
    """Where a target's value sits in the Hector snapshot tables."""
    return f"attributes[{lit(target.attribute)}]" if target.attribute else f'"{target.name}"'


def identify_column(plan: CategoryPlan) -> str | None:
    """Where an asset's `identify_by` value sits in the Hector snapshot (None without identify_by)."""
    if not plan.identify_target:
        return None
    name = plan.identify_target.removeprefix(ATTRIBUTE_PREFIX)
    return f"attributes[{lit(name)}]" if name != plan.identify_target else f'"{name}"'


def hector_models(plan: CategoryPlan) -> str:
    """Hector's subcategories of the category with their identity, canonical `h{i}` and raw
    (trimmed) `hr{i}` values; each value is trimmed once, below the forms made of it."""
    keys = {name: f"key_{name}" for name in MODEL_KEY_FIELDS}  # the identity, mapped or not (a parked category)
    model = [(i, t) for i, t in enumerate(plan.targets) if t.scope == "model"]
    raws = [f"{trimmed(name)} AS {key}" for name, key in keys.items()]
    raws += [f"{trimmed(hector_column(t))} AS hr{i}" for i, t in model if t.name not in keys]
    raw = {i: keys.get(t.name, f"hr{i}") for i, t in model}  # where target i's trimmed value is
    values = "".join(f", {typed(raw[i], t.kind)} AS h{i}, {raw[i]} AS hr{i}" for i, t in model)
    return f"""
        SELECT id, version, {model_key(*keys.values())} AS model_key, {model_label(*keys.values())} AS model_label{values}
        FROM (SELECT id, version, {', '.join(raws)} FROM hector_subcategory WHERE category_key = {lit(plan.key)})
    """


def hector_assets(plan: CategoryPlan, *, whole: bool = True, values: tuple[int, ...] | None = None,
                  digest: bool = False, models: str | None = None) -> str:
    """Hector's assets of the category with their model identity and, for the targets `values`
    (every one by default; model ones through the subcategory), canonical `h{i}` and, when
    `whole`, raw `hr{i}` values.

    Only `whole` rows carry the title, attributes, refs and update time: the change set toward
    Hector reads none of them, and leaving them out spares a million-asset category a second
    copy of its attributes. `digest` adds `digest`, the asset's written digest as
    `digest_assets` keeps it. `models` names a CTE of `hector_models` in scope, which the
    statement then binds once rather than once per reader."""
    wanted = [i for i in range(len(plan.targets)) if values is None or i in values]
    own = [i for i in wanted if plan.targets[i].scope == "asset"]  # the others come with the model
    trims = "".join(f", {trimmed(hector_column(plan.targets[i]))} AS hr{i}" for i in own)
    columns = [(f"{typed(f'a.hr{i}', plan.targets[i].kind)} AS h{i}" + (f", a.hr{i}" if whole else "")
                if i in own else f"m.h{i}" + (f", m.hr{i}" if whole else "")) for i in wanted]
    if digest:
        columns.append("a.written_digest AS digest")
    column = identify_column(plan)
    identify = f"lower({trimmed('a.' + column)})" if column else "NULL"
    snapshot = (f"a.attributes, a.external_refs, a.updated_at, {trimmed('a.title')} AS title, " if whole else "")
    return f"""
        SELECT a.id, a.version, a.status, a.c2_ref, a.subcategory_id, {snapshot}
               a.status IS NOT DISTINCT FROM 'retired' AS retired,
               m.model_key, m.model_label, {identify} AS identify_value, {', '.join(columns) or 'NULL AS none'}
        FROM (SELECT *{trims} FROM hector_asset WHERE category_key = {lit(plan.key)}) a
        LEFT JOIN {models or f"({hector_models(plan)})"} m ON m.id = a.subcategory_id
    """


def digest_assets(plan: CategoryPlan) -> str:
    """SQL: an UPDATE giving each asset of the category its `written_digest`, where the one it
    has was not computed by this very statement for its current version (`written_for`).

    A read stores fresh rows without one, and Hector gives a changed asset a new version: on a
    daily sync only the assets read again are made canonical, not a million every run. A
    change of mapping changes the statement, and so every asset's `written_for`."""
    digest = written_digest(plan, lambda i: canon(hector_column(plan.targets[i]), plan.targets[i].kind))
    written_for = f"hash({lit(hashlib.sha256(digest.encode()).hexdigest())}, version)"
    return f"""
        UPDATE hector_asset SET written_digest = {digest}, written_for = {written_for}
        WHERE category_key = {lit(plan.key)} AND written_for IS DISTINCT FROM {written_for}
    """


def _ambiguity(key: str, shared: str, these: str, other: str, those: str) -> str:
    """Why each item of one side (`key`) has no unique partner, in words with the ids: its
    value is `shared` with other items of its side, or it matches several of the other side."""
    value = quoted("any_value(identify_value)")
    mine, theirs = f"{these.lower().rstrip('s')}_ids", f"{those.lower().rstrip('s')}_ids"
    return f"""
            SELECT {key}, any_value(identify_value) AS identify_value,
                   CASE WHEN max({shared}) > 1
                        THEN 'identify_by value ' || {value} || ' is shared by {these} '
                             || any_value({mine}) || ' and matches {other} ' || any_value({theirs})
                        ELSE 'identify_by value ' || {value} || ' matches several unlinked {those}: '
                             || any_value({theirs}) END AS ambiguity
            FROM ambiguous GROUP BY {key}"""


def pairs(plan: CategoryPlan) -> str:
    """CTEs ending in `pair` (ci_id, asset_id, match, pinned_by) and the ambiguities of each side.

    `match` is linked (external ref), local (our link of a CI we created), pinned (an operator's
    pin, `pinned_by` whom), recovered (a CI we created whose answer was lost, found by the
    journal), or identified (`identify_by`). `unlinking` (ci_id, asset_id, version, reason)
    holds the pairs an operator unlinked whose asset still carries the ref: neither item is
    matched otherwise.
    `ambiguous` (ci_id, asset_id, identify_value) holds every candidate pair identify_by could
    not settle, `intent` every CI a journalled create may have made (asset_id, ci_id).
    Expects CTEs `c` (normalized CIs, every status) and `h` (hector_assets) in scope.
    """
    key = lit(plan.key)
    return f"""
        unlinking AS (
            SELECT u.ci_id, u.asset_id, h.version,
                   'unlinked by ' || u.requested_by || ' with hector-sync unlink: the external ref is removed, '
                   || 'and from the next sync on both items are matched as new ones' AS reason
            FROM unlink u
            JOIN h ON h.id = u.asset_id AND h.c2_ref = u.ci_id WHERE u.category_key = {key}
        ), ref_pair AS (
            SELECT c.ci_id, min(h.id) AS asset_id FROM c JOIN h ON h.c2_ref = c.ci_id
            WHERE h.id NOT IN (SELECT asset_id FROM unlinking) GROUP BY c.ci_id
        ), taken AS (
            SELECT ci_id FROM ref_pair UNION ALL SELECT ci_id FROM unlinking
        ), unref AS (
            SELECT * FROM h WHERE c2_ref IS NULL
        ), local_pair AS (
            SELECT l.ci_id, min(l.asset_id) AS asset_id, any_value(l.pinned_by) AS pinned_by FROM link l
            JOIN unref ON unref.id = l.asset_id JOIN c ON c.ci_id = l.ci_id
            WHERE l.category_key = {key} AND l.ci_id NOT IN (SELECT ci_id FROM taken)
            GROUP BY l.ci_id
        ), intent AS (
            SELECT p.asset_id, c.ci_id,
                   count(*) OVER (PARTITION BY p.asset_id) AS cis_per_asset,
                   count(*) OVER (PARTITION BY c.ci_id) AS assets_per_ci
            FROM pending_create p JOIN unref ON unref.id = p.asset_id
            JOIN c ON c.ci_name = p.name AND c.modified_at >= p.recorded_at - {CLOCK_SKEW}
            WHERE p.category_key = {key}
              AND c.ci_id NOT IN (SELECT ci_id FROM taken UNION ALL SELECT ci_id FROM local_pair)
              AND p.asset_id NOT IN (SELECT asset_id FROM local_pair)
        ), recovered_pair AS (
            SELECT ci_id, asset_id FROM intent WHERE cis_per_asset = 1 AND assets_per_ci = 1
        ), claimed AS (
            SELECT ci_id, asset_id FROM ref_pair UNION ALL SELECT ci_id, asset_id FROM local_pair
            UNION ALL SELECT ci_id, asset_id FROM recovered_pair UNION ALL SELECT ci_id, asset_id FROM unlinking
        ), candidates AS (
            SELECT c.ci_id, unref.id AS asset_id, c.identify_value,
                   count(*) OVER (PARTITION BY c.ci_id) AS assets_per_ci,
                   count(*) OVER (PARTITION BY unref.id) AS cis_per_asset
            FROM c JOIN unref ON unref.identify_value = c.identify_value
            WHERE NOT c.retired AND NOT unref.retired
              AND c.ci_id NOT IN (SELECT ci_id FROM claimed)
              AND unref.id NOT IN (SELECT asset_id FROM claimed)
        ), pair AS (
            SELECT ci_id, asset_id, 'linked' AS match, NULL AS pinned_by FROM ref_pair
            UNION ALL SELECT ci_id, asset_id, CASE WHEN pinned_by IS NULL THEN 'local' ELSE 'pinned' END, pinned_by
                FROM local_pair
            UNION ALL SELECT ci_id, asset_id, 'recovered', NULL FROM recovered_pair
            UNION ALL SELECT ci_id, asset_id, 'identified', NULL FROM candidates
                WHERE assets_per_ci = 1 AND cis_per_asset = 1
        ), ambiguous AS (
            SELECT *,
                   string_agg(CAST(asset_id AS VARCHAR), ', ' ORDER BY asset_id) OVER (PARTITION BY ci_id) AS asset_ids,
                   string_agg(ci_id, ', ' ORDER BY ci_id) OVER (PARTITION BY asset_id) AS ci_ids
            FROM candidates WHERE assets_per_ci > 1 OR cis_per_asset > 1
        ), ci_ambiguity AS ({_ambiguity("ci_id", "cis_per_asset", "CIs", "asset", "assets")}
        ), asset_ambiguity AS ({_ambiguity("asset_id", "assets_per_ci", "assets", "CI", "CIs")}
        )
    """
