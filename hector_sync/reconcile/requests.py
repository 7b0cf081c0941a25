"""The request each change row makes, written with the change set: method, target and body.

A change row says what changes (field: old → new); its request says how the writeback makes the
change: `method` (POST or PATCH), `target` (the path under the API base, as docs/hector-api.md
and docs/c2-itsm-api.md give it) and `body` (JSON text, complete and typed: numbers as JSON
numbers, C2 ITSM fields by id, Hector attributes under Hector's own names, and an asset's
attributes and external refs sent whole, merged with what its snapshot holds). `target_version`
is the version the PATCH's If-Match carries.

The first row of each API call carries its request, and the call's other rows none: a body is
stored once, not once per field (a first sync of a million CIs plans ten million rows). A call
is, per item (PER_ITEM) a subcategory create or
update, an asset create, a CI create, or toward C2 ITSM the external ref of an asset linked to
its CI; per target (PER_TARGET) everything one asset or CI gets (link, update, move, retire,
reactivate), merged into one PATCH. Report rows (unchanged, skip, missing, conflict) carry none.

Two values no plan can know are left to the writers, which send everything else as stored:
- the `subcategory_id` of a model the same plan creates: null in the body of an asset create or
  move, whose rows' `model_key` names the model; the writer fills in the id the subcategory's
  create answered (`writeback.hector`);
- the id of a CI the plan creates: the asset's external ref to it is written once C2 ITSM has
  answered (`writeback.c2`).

An operator's unlink (`hector-sync unlink`) is a request like the others: the asset's external
refs without the `c2` one (`unlink_asset` within the asset's PATCH, `unlink_ci` on its own).

Everything here is set-wise SQL over the change rows and the snapshots, never a loop over rows:
a first sync plans a million creates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from hector_sync.config import TO_C2, TO_HECTOR, Direction
from hector_sync.http import path_of
from hector_sync.reconcile.mapping import NAME_PSEUDO_FIELD, CategoryPlan
from hector_sync.reconcile.match import hector_models
from hector_sync.reconcile.normalize import lit

ASSET_ACTIONS = ("link_asset", "unlink_asset", "update_asset", "revert_drift", "move_asset", "retire_asset",
                 "reactivate_asset")
CI_ACTIONS = ("update_ci", "revert_drift", "retire_ci", "reactivate_ci")
PER_ITEM = {TO_HECTOR: ("create_subcategory", "update_subcategory", "create_asset"),
            TO_C2: ("create_ci", "link_ci", "unlink_ci")}
REF_WRITES = ("link_ci", "unlink_ci")  # toward C2 ITSM, the calls that write an asset's external refs in Hector
PER_TARGET = {TO_HECTOR: ASSET_ACTIONS, TO_C2: CI_ACTIONS}
REQUESTING = frozenset(a for actions in (*PER_ITEM.values(), *PER_TARGET.values()) for a in actions)
MAX_EXACT_INTEGER = 2**53  # a JSON number beyond which an integer is no longer exact in a double


def _typed(text: str, kind: str) -> str:
    """SQL: a canonical text value as the APIs take it, as JSON: a number where `kind` (SQL) is
    'number' (an integer when whole), else text; JSON null when empty."""
    number = f"TRY_CAST({text} AS DOUBLE)"
    whole = f"{number} = trunc({number}) AND abs({number}) < {MAX_EXACT_INTEGER}"
    return (f"coalesce(CASE WHEN {kind} = 'number' AND isfinite({number}) THEN CASE WHEN {whole} "
            f"THEN to_json(CAST({number} AS BIGINT)) ELSE to_json({number}) END ELSE to_json({text}) END, 'null'::JSON)")


def _json(value: object) -> str:
    """SQL: a value known at plan time (an id from the catalog) as a JSON literal."""
    return f"{lit(json.dumps(value))}::JSON"


def _table(columns: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    """SQL of a small constant table of text; an empty one keeps its columns."""
    values = [f"({', '.join(lit(v) for v in row)})" for row in rows]
    if not values:
        return "SELECT " + ", ".join(f"NULL::VARCHAR AS {c}" for c in columns) + " WHERE false"
    return f"SELECT * FROM (VALUES {', '.join(values)}) v({', '.join(columns)})"


def _c2_ref(refs: str, ci_id: str) -> str:
    """SQL: an asset's external refs (JSON text, as the snapshot holds them) with the `c2` one
    naming `ci_id`, or none when `ci_id` is NULL (an operator's unlink): the refs of other
    sources are kept, since Hector takes the list whole."""
    kept = f"list_filter(CAST(coalesce({refs}, '[]') AS JSON[]), lambda x: x->>'source' IS DISTINCT FROM 'c2')"
    return f"to_json(CASE WHEN {ci_id} IS NULL THEN {kept} ELSE {kept} || [json_object('source', 'c2', 'id', {ci_id})] END)"


def _hector(plan: CategoryPlan) -> str:
    """CTEs `calls` (call, call_key, method, target) and `entries` (call, call_key, key, value)
    of the requests toward Hector."""
    key, api = lit(plan.key), plan.api
    spec = _table(("field", "scope", "key", "attribute", "kind"), [
        (t.name, t.scope, api.attribute_name(t.scope, t.attribute) if t.attribute else t.name, t.attribute or "", t.kind)
        for t in plan.targets])
    attributes = _table(("attribute", "key", "kind"), [
        (name, api.attribute_name(scope, name), kind) for (scope, name), kind in plan.attribute_kinds.items()
        if scope == "asset"])
    return f"""
        spec AS ({spec}),
        attribute AS ({attributes}),
        val AS (
            SELECT r.call, r.call_key, s.key, nullif(s.attribute, '') AS attribute, {_typed('r.new', 's.kind')} AS value
            FROM r JOIN spec s ON s.field = r.field
                AND s.scope = CASE WHEN r.call IN ('create_subcategory', 'update_subcategory') THEN 'model' ELSE 'asset' END
        ),
        kept AS (  -- what a patched asset holds besides: a PATCH sends its attributes whole
            SELECT call, call_key, entry.key AS attribute, entry.value AS text FROM (
                SELECT g.call, g.call_key, unnest(map_entries(a.attributes)) AS entry
                FROM (SELECT DISTINCT call, call_key FROM val WHERE call = 'patch' AND attribute IS NOT NULL) g
                JOIN hector_asset a ON a.category_key = {key} AND a.id = TRY_CAST(g.call_key AS BIGINT)
            ) WHERE entry.value IS NOT NULL
        ),
        attrs AS (
            SELECT call, call_key, json_group_object(key, value) AS value FROM (
                SELECT call, call_key, arg_max(key, fresh) AS key, arg_max(value, fresh) AS value FROM (
                    SELECT call, call_key, attribute, key, value, 1 AS fresh FROM val WHERE attribute IS NOT NULL
                    UNION ALL
                    SELECT k.call, k.call_key, k.attribute, coalesce(a.key, k.attribute),
                           {_typed('k.text', "coalesce(a.kind, 'text')")}, 0
                    FROM kept k LEFT JOIN attribute a USING (attribute)
                ) GROUP BY call, call_key, attribute
            ) GROUP BY call, call_key
        ),
        models AS (SELECT model_key, min(id) AS id FROM ({hector_models(plan)}) GROUP BY model_key),
        calls AS (
            SELECT g.*, m.id AS model_id, a.external_refs AS refs,
                   CASE WHEN g.call IN ('create_subcategory', 'create_asset') THEN 'POST' ELSE 'PATCH' END AS method,
                   CASE g.call WHEN 'create_subcategory' THEN '/subcategories'
                               WHEN 'update_subcategory' THEN '/subcategories/' || url_encode(g.target_id)
                               WHEN 'create_asset' THEN '/assets'
                               ELSE '/assets/' || url_encode(g.call_key) END AS target
            FROM (
                SELECT call, call_key, any_value(target_id) AS target_id,
                       any_value(item) FILTER (WHERE action = 'link_asset') AS linked,
                       bool_or(action = 'unlink_asset') AS unlinks,
                       any_value(model_key) FILTER (WHERE action IN ('create_asset', 'move_asset')) AS model_key,
                       bool_or(action = 'move_asset') AS moves,
                       coalesce(any_value(new) FILTER (WHERE action = 'reactivate_asset'),
                                CASE WHEN bool_or(action = 'retire_asset') THEN 'retired' END) AS status
                FROM r WHERE call IS NOT NULL GROUP BY call, call_key
            ) g
            LEFT JOIN models m ON m.model_key = g.model_key
            LEFT JOIN hector_asset a ON (g.linked IS NOT NULL OR g.unlinks) AND a.category_key = {key}
                                     AND a.id = TRY_CAST(g.call_key AS BIGINT)
        ),
        entries AS (
            SELECT call, call_key, key, value FROM val WHERE attribute IS NULL
            UNION ALL
            SELECT call, call_key, 'attributes', value FROM attrs
            UNION ALL
            SELECT call, call_key, unnest(list_filter([
                {{'key': 'category_id', 'value': CASE WHEN call = 'create_subcategory' THEN {_json(api.hector_category_id)} END}},
                {{'key': 'subcategory_id', 'value': CASE WHEN call = 'create_asset' OR moves
                                                      THEN coalesce(to_json(model_id), 'null'::JSON) END}},
                {{'key': 'stockroom_id', 'value': CASE WHEN call = 'create_asset' THEN {_json(api.stockroom_id)} END}},
                {{'key': 'external_refs', 'value': CASE WHEN call = 'create_asset'
                                                     THEN json_array(json_object('source', 'c2', 'id', call_key))
                                                     WHEN linked IS NOT NULL OR unlinks THEN {_c2_ref('refs', 'linked')} END}},
                {{'key': 'status', 'value': to_json(status)}}
            ], lambda e: e.value IS NOT NULL), recursive := true)
            FROM calls
        )"""


def _c2(plan: CategoryPlan) -> str:
    """CTEs `calls` and `entries` of the requests toward C2 ITSM (and of the external refs a
    link writes to Hector)."""
    key, api = lit(plan.key), plan.api
    fields = {t.source: t.c2_type for t in plan.targets if t.source != NAME_PSEUDO_FIELD}
    spec = _table(("field", "key", "kind"),
                  [(source, api.c2_field_ids.get(source, source), kind) for source, kind in fields.items()])
    return f"""
        spec AS ({spec}),
        fields AS (
            SELECT r.call, r.call_key, json_group_object(s.key, {_typed('r.new', 's.kind')}) AS value
            FROM r JOIN spec s ON s.field = r.field WHERE r.call IN ('create_ci', 'patch')
            GROUP BY r.call, r.call_key
        ),
        calls AS (
            SELECT g.*, f.value AS fields, a.external_refs AS refs,
                   CASE g.call WHEN 'create_ci' THEN 'POST' ELSE 'PATCH' END AS method,
                   CASE WHEN g.call = 'create_ci' THEN {lit(path_of('cmdbs', api.cmdb_id, 'cis'))}
                        WHEN g.call IN {REF_WRITES} THEN '/assets/' || url_encode(g.call_key)
                        ELSE '/cis/' || url_encode(g.call_key) END AS target
            FROM (
                SELECT call, call_key, any_value(target_id) AS target_id,
                       any_value(new) FILTER (WHERE field = {lit(NAME_PSEUDO_FIELD)}) AS name,
                       CASE WHEN bool_or(field = 'status' AND new = 'retired') THEN 'retired'
                            WHEN bool_or(field = 'status') THEN 'active' END AS status
                FROM r WHERE call IS NOT NULL GROUP BY call, call_key
            ) g
            LEFT JOIN fields f USING (call, call_key)
            LEFT JOIN hector_asset a ON g.call IN {REF_WRITES} AND a.category_key = {key}
                                     AND a.id = TRY_CAST(g.call_key AS BIGINT)
        ),
        entries AS (
            SELECT call, call_key, unnest(list_filter([
                {{'key': 'category_id', 'value': CASE WHEN call = 'create_ci' THEN {_json(api.c2_category_id)} END}},
                {{'key': 'name', 'value': to_json(CASE WHEN call = 'create_ci' THEN coalesce(name, '') ELSE name END)}},
                {{'key': 'status', 'value': to_json(status)}},
                {{'key': 'fields', 'value': CASE WHEN call = 'create_ci' THEN coalesce(fields, '{{}}'::JSON) ELSE fields END}},
                {{'key': 'external_refs', 'value': CASE call WHEN 'link_ci' THEN {_c2_ref('refs', 'target_id')}
                                                            WHEN 'unlink_ci' THEN {_c2_ref('refs', 'NULL')} END}}
            ], lambda e: e.value IS NOT NULL), recursive := true)
            FROM calls
        )"""


def with_requests(plan: CategoryPlan, direction: Direction, rows: str, order: str) -> str:
    """SQL: the change rows of `rows` (SQL of CHANGE rows without their request) with the
    request of each, sorted by `order` (ORDER BY terms)."""
    per_item, per_target = (", ".join(lit(a) for a in actions) for actions in (PER_ITEM[direction], PER_TARGET[direction]))
    requests = _hector(plan) if direction is TO_HECTOR else _c2(plan)
    return f"""
        WITH r AS MATERIALIZED (  -- each row with its call: 'patch' (per target) or its action (per item), and key
            SELECT *, CASE WHEN action IN ({per_target}) THEN 'patch' WHEN action IN ({per_item}) THEN action END AS call,
                   CASE WHEN action IN ({per_target}) THEN target_id ELSE item END AS call_key
            FROM ({rows})
        ),
        {requests},
        bodies AS (SELECT call, call_key, json_group_object(key, value) AS body FROM entries GROUP BY call, call_key),
        leads AS (  -- the row of each call that carries its request: its first by action, then field
            SELECT call, call_key, min({{'action': action, 'field': coalesce(field, '')}}) AS lead
            FROM r WHERE call IS NOT NULL GROUP BY call, call_key
        ),
        request AS (
            SELECT c.call, c.call_key, l.lead.action AS lead_action, l.lead.field AS lead_field, c.method, c.target,
                   CAST(coalesce(b.body, '{{}}'::JSON) AS VARCHAR) AS body
            FROM calls c JOIN leads l USING (call, call_key) LEFT JOIN bodies b USING (call, call_key)
        )
        SELECT r.* EXCLUDE (call, call_key), q.method, q.target, q.body
        FROM r LEFT JOIN request q ON q.call = r.call AND q.call_key = r.call_key AND q.lead_action = r.action
                                  AND q.lead_field = coalesce(r.field, '')
        ORDER BY {order}
    """
