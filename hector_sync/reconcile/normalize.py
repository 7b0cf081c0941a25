"""CIs to comparable columns: the desired models and assets, and the CIs left out with a reason.

Everything here is SQL text over the documented tables (see `hector_sync.store`), run by the
caller on whatever DuckDB connection holds them: the sync's file, or an in-memory database in
tests. Values become canonical text: trimmed strings with empty meaning null, numbers through
DOUBLE, dates through DATE, e-mail addresses (C2 `user` fields) trimmed and checked, so both
sides compare equal exactly when the rules say they are (addresses: whatever their case, see
`comparable`).
"""

from __future__ import annotations

from collections.abc import Callable

from hector_sync.config import TO_HECTOR
from hector_sync.reconcile.mapping import MODEL_KEY_FIELDS, NAME_PSEUDO_FIELD, CategoryPlan, Kind

# Exactly the characters str.isspace calls whitespace (no-break, ideographic, ... spaces): a
# maker of U+3000 alone is as empty to Hector as one of spaces. A regular expression, because
# DuckDB's trim(x, characters) costs per character of the set, on every value.
BLANK = r"[\s\p{Z}\x{0b}\x{85}\x{1c}-\x{1f}]"
# An e-mail address as C2 ITSM's `user` fields take it, checked simply (as the C2 simulator
# does): one @, a non-empty local part, a domain with a dot that is not its first or last
# character, and no white space (trimmed first, like every value).
_ADDRESS_CHAR = "[^@" + BLANK[1:]
EMAIL = rf"{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+\.{_ADDRESS_CHAR}+"
CASELESS: frozenset[Kind] = frozenset({"user"})  # kinds whose values are the same in any case
EXPECTED = {"number": "a number", "date": "a date (YYYY-MM-DD)", "user": "an e-mail address"}  # by kind
REQUIRED = {"maker": "model", "model": "model", "description": "model", "title": "asset"}  # Hector refuses them empty


def lit(value: str) -> str:
    """A SQL string literal; names come from configuration, so quote them properly."""
    return "'" + value.replace("'", "''") + "'"


def trimmed(expr: str) -> str:
    """The value without its blanks, NULL when nothing is left. Most values start and end with
    a printable ASCII character, so they are their own trimmed form: only the others pay for
    the regular expression (half the cost of normalizing a million CIs)."""
    text = f"CAST({expr} AS VARCHAR)"
    return (f"CASE WHEN ascii({text}) BETWEEN 33 AND 126 AND ascii(right({text}, 1)) BETWEEN 33 AND 126 "
            f"THEN {text} ELSE NULLIF(regexp_replace({text}, {lit(f'^{BLANK}+|{BLANK}+$')}, '', 'g'), '') END")


def canon(expr: str, kind: Kind) -> str:
    """The canonical text of a value, NULL when empty or not of its kind: numbers must be finite
    (JSON carries no NaN), dates a real YYYY-MM-DD day (not 'infinity', 'epoch' or year 0), and
    e-mail addresses match `EMAIL` (they keep their case: it is written as the source holds it)."""
    return typed(trimmed(expr), kind)


def typed(value: str, kind: Kind) -> str:
    """`canon` of a value already `trimmed`: a query that needs both forms trims once, and
    DuckDB binds a shorter statement."""
    if kind == "text":
        return value
    if kind == "user":
        return f"CASE WHEN regexp_full_match({value}, {lit(EMAIL)}) THEN {value} END"
    if kind == "number":
        number = f"TRY_CAST({value} AS DOUBLE)"
        return f"CASE WHEN isfinite({number}) THEN CAST({number} AS VARCHAR) END"
    # DuckDB writes a date of years 1-9999 as YYYY-MM-DD and every other one longer or shorter
    # ('infinity', '10000-01-01', '0001-01-01 (BC)'): ten characters written back unchanged are
    # a real YYYY-MM-DD day, as a regular expression would say at three times the cost.
    return (f"CASE WHEN length({value}) = 10 "
            f"AND CAST(TRY_CAST({value} AS DATE) AS VARCHAR) = {value} THEN {value} END")


def comparable(expr: str, kind: Kind) -> str:
    """What decides whether two canonical values of a kind are the same value: the value itself,
    except for the CASELESS kinds (e-mail addresses), the same whatever their case."""
    return f"lower({expr})" if kind in CASELESS else expr


def written_digest(plan: CategoryPlan, value: Callable[[int], str]) -> str:
    """SQL: one hash of the comparable forms of the asset values a sync writes to Hector
    (`CategoryPlan.written_to_assets`), `value(i)` being target i's canonical value. Two sides
    whose digests are equal hold the same values, so a pair that agrees costs one comparison,
    not one per field; each side keeps its digests with its rows (`desired_assets`,
    `match.digest_assets`), so an unchanged row is not made canonical again."""
    values = (comparable(value(i), plan.targets[i].kind) for i in plan.written_to_assets())
    return "hash([" + ", ".join(values) + "]::VARCHAR[])"


def quoted(expr: str) -> str:
    """A value shown in quotes inside a reason, as an operator would write it."""
    return "('''' || CAST(" + expr + " AS VARCHAR) || '''')"


def model_key(maker: str, model: str, description: str) -> str:
    """Hector's identity of a subcategory: the triple, trimmed and case-insensitive, as a JSON
    array so that no value, whatever characters it holds, can run into the next."""
    return f"CAST(to_json([lower({maker}), lower({model}), lower({description})]) AS VARCHAR)"


def model_label(maker: str, model: str, description: str) -> str:
    return f"concat_ws(' / ', {maker}, {model}, {description})"


def c2_column(source: str) -> str:
    """Where a C2 field's raw value sits in the C2 snapshot (`c2_ci`)."""
    return "name" if source == NAME_PSEUDO_FIELD else f"fields[{lit(source)}]"


def listed_cis(plan: CategoryPlan, raw: tuple[int, ...] | None = None, among: str | None = None) -> str:
    """One row per CI id (the latest if C2 listed it twice): its identity, status and the raw
    `r{i}` of the targets `raw` (every target by default). Pairing needs no canonical value, so
    the change set reads only this, once per run, and leaves the values to `derive`. `among`:
    a condition on c2_ci that keeps only some CIs (all of an id's listings, or none)."""
    raws = "".join(f", {c2_column(plan.targets[i].source)} AS r{i}"
                   for i in (range(len(plan.targets)) if raw is None else raw))
    identify = f"lower({trimmed(c2_column(plan.identify_source))})" if plan.identify_source else "NULL"
    key, latest = lit(plan.key), "modified_at DESC NULLS LAST, version DESC"
    listed = f"c2_ci WHERE category_key = {key}" + ("" if among is None else f" AND {among}")
    return f"""
        WITH listed_twice AS (  -- rarely any: ranking a million unique ids costs more than finding them
            SELECT ci_id FROM {listed} GROUP BY ci_id HAVING count(*) > 1
        ), ci AS (
            SELECT * FROM {listed} AND ci_id NOT IN (SELECT ci_id FROM listed_twice)
            UNION ALL
            SELECT * FROM {listed} AND ci_id IN (SELECT ci_id FROM listed_twice)
            QUALIFY row_number() OVER (PARTITION BY ci_id ORDER BY {latest}) = 1
        )
        SELECT ci_id, version, status, modified_at, {trimmed('name')} AS ci_name, {identify} AS identify_value,
               status IS NOT DISTINCT FROM 'retired' AS retired{raws}
        FROM ci
    """


def normalized_cis(plan: CategoryPlan, among: str | None = None) -> str:
    """`listed_cis` (of the CIs `among` keeps) with every target's raw `r{i}` and canonical
    `v{i}`; `rejected` when a value bound for Hector cannot be synced."""
    canons = ", ".join(f"{canon(f'r{i}', t.kind)} AS v{i}" for i, t in enumerate(plan.targets))
    keys = [f"v{plan.index(name)}" for name in MODEL_KEY_FIELDS]
    problems = " OR ".join(f"({c})" for c in _problem_conditions(plan).values()) or "false"
    return f"""
        WITH canonical AS (SELECT *, {canons} FROM ({listed_cis(plan, among=among)}))
        SELECT *, {model_key(*keys)} AS model_key, {model_label(*keys)} AS model_label, ({problems}) AS rejected
        FROM canonical
    """


def _problem_conditions(plan: CategoryPlan) -> dict[int, str]:
    """Per target bound for Hector, the SQL condition under which a CI cannot be synced."""
    conditions: dict[int, str] = {}
    for i in plan.toward(TO_HECTOR):
        t = plan.targets[i]
        if t.name in REQUIRED:
            conditions[i] = f"v{i} IS NULL"
        elif t.kind != "text":
            conditions[i] = f"v{i} IS NULL AND {trimmed(f'r{i}')} IS NOT NULL"
    return conditions


def _reason(plan: CategoryPlan, i: int) -> str:
    t = plan.targets[i]
    if t.name in REQUIRED:
        return f"{lit(f'{t.source} is empty, and Hector needs a {t.name} for the {REQUIRED[t.name]}')}"
    return f"{lit(t.source + ' ')} || {quoted(f'r{i}')} || {lit(f' is not {EXPECTED[t.kind]}')}"


def rejected_cis(plan: CategoryPlan, source: str) -> str:
    """Active CIs that cannot be synced, one row per offending field, with the reason in words.

    Here and below, `source` is `normalized_cis(plan)` in SQL, or a table holding its rows.
    """
    parts = [
        f"SELECT ci_id, {lit(plan.targets[i].source)} AS field, CAST(r{i} AS VARCHAR) AS value, "
        f"{_reason(plan, i)} AS reason FROM norm WHERE NOT retired AND ({cond})"
        for i, cond in _problem_conditions(plan).items()
    ]
    union = " UNION ALL ".join(parts) or "SELECT NULL AS ci_id, NULL AS field, NULL AS value, NULL AS reason WHERE false"
    return f"""
        WITH norm AS ({source})
        SELECT {lit(plan.key)} AS category_key, ci_id, field, value, reason FROM ({union})
        ORDER BY ci_id, field
    """


def _values(plan: CategoryPlan, scope: str, value: str) -> str:
    """A desired row's values as a list in the order of the plan's targets (NULL for the other
    scope's): `fields[i + 1]` is target i. A MAP, or JSON, costs seconds more per million CIs to
    build and to write; the names are the category's mapping (`category_catalog`)."""
    return "[" + ", ".join(value.format(i=i) if t.scope == scope else "NULL"
                           for i, t in enumerate(plan.targets)) + "]::VARCHAR[]"


def desired_assets(plan: CategoryPlan, source: str) -> str:
    """Each active, valid CI as the asset Hector should hold, the `written_digest` of its values,
    and its model's values apart (`model_fields`): the desired models are counted from these
    rows (`desired_asset_rows`), and the change set, which compares the asset's, does not carry them."""
    return f"""
        WITH norm AS ({source})
        SELECT *, {written_digest(plan, lambda i: f"fields[{i + 1}]")} AS written_digest FROM (
            SELECT {lit(plan.key)} AS category_key, ci_id, model_key, identify_value, modified_at,
                   {_values(plan, 'asset', 'v{i}')} AS fields, {_values(plan, 'model', 'v{i}')} AS model_fields
            FROM norm WHERE NOT retired AND NOT rejected)
    """


def desired_asset_rows(plan: CategoryPlan) -> str:
    """The category's desired assets as `normalized_cis` rows (active, valid), for `desired_models`."""
    values = ", ".join(f"{'fields' if t.scope == 'asset' else 'model_fields'}[{i + 1}] AS v{i}"
                       for i, t in enumerate(plan.targets))
    return f"""
        SELECT ci_id, model_key, false AS retired, false AS rejected, {values},
               strftime(modified_at, '%Y%m%d%H%M%S.%f') || ci_id AS recency
        FROM desired_asset WHERE category_key = {lit(plan.key)}
    """


def desired_models(plan: CategoryPlan, source: str) -> str:
    """One subcategory per distinct triple; where CIs disagree the most recent CI wins. `source`
    is `desired_asset_rows(plan)`, or rows like them with a `recency` to rank the CIs by."""
    optional = [(i, t) for i, t in enumerate(plan.targets) if t.scope == "model" and t.name not in MODEL_KEY_FIELDS]
    disagreements = ", ".join(
        f"CASE WHEN count(DISTINCT {comparable(f'v{i}', t.kind)}) > 1 THEN {lit(t.name + ': ')} "
        f"|| count(DISTINCT {comparable(f'v{i}', t.kind)}) "
        f"|| ' different values' END"
        for i, t in optional
    )
    return f"""
        WITH norm AS ({source})
        SELECT {lit(plan.key)} AS category_key, model_key,
               {_values(plan, 'model', 'arg_max(v{i}, recency)')} AS fields,
               count(*) AS ci_count, arg_max(ci_id, recency) AS source_ci,
               NULLIF(concat_ws('; ', {disagreements or 'NULL'}), '') AS disagreement
        FROM norm WHERE NOT retired AND NOT rejected
        GROUP BY model_key ORDER BY model_key
    """
