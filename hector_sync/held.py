"""What the sync holds back for a person to settle, and the pins that settle it: `hector-sync
held`, `link` and `unlink`.

The sync never guesses which CI is which asset, so two things wait for an operator:
- an `identify_by` value that matches several unlinked items (`reconcile.match`, `ambiguous`):
  every item involved is skipped;
- a C2 ITSM create whose outcome is unknown (`writeback.c2`): held, its journal entry
  (`pending_create`) kept, while C2 ITSM may list more than one CI that could be it.

Like a CMDB's de-duplication task, `held` lists each with its candidates, read from the latest
snapshots by the very SQL of a run (`match.pairs`), so it needs neither system. `link CI ASSET`
pins the right pair into the `link` table, where the next sync finds it (match `pinned`, before
the journal and identify_by) and links it as it links any pair: the asset gets the external ref (link_asset, or link_ci under
hector_to_c2) and the fields are synced, under the guard and If-Match. A pinned held create is
no longer a create; its journal entry goes once the link is written, so it can never become a
second CI (an unlink before that leaves the create held, as it was).

`unlink CI ASSET` takes a pair back. A pin no sync has written yet is just dropped: the next
sync matches both items as new ones. A pair whose ref the asset carries in Hector (written by a
sync or by a person, or linked by a sync since the latest read) is taken apart by the next
sync: it removes the ref (unlink_asset, or unlink_ci under hector_to_c2), under If-Match, and
leaves both items alone otherwise; from the sync after, they are matched as new items. Leaving
the ref would change nothing (the sync pairs by it first), and a ref removed by hand would come
back from the link table. identify_by may then find them again: correct the value in one
system to keep them apart. A pin of an item whose unlink is not done yet waits for it.

Pins and unpins take the category's lock (never during a run of it), and each is a row of
`change_history` naming the OS user (`operator`), which also makes every plan computed before it
stale: applied, it could write the very link the operator took back.
"""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from hector_sync.catalog import MappingInvalid
from hector_sync.config import SYSTEM_NAMES, TO_C2, TO_HECTOR, SyncConfig
from hector_sync.reconcile.mapping import CategoryPlan
from hector_sync.reconcile.match import hector_assets, identify_column, pairs
from hector_sync.reconcile.normalize import c2_column, listed_cis, lit, quoted, trimmed
from hector_sync.store import CategoryBusy, Store, executed, scalar
from hector_sync.sync import StoredCategory
from hector_sync.textsafe import text, value

PIN_WAIT_S = 10.0  # how long `link` and `unlink` wait for a run of the category to end
HELD_SCHEMA = dict.fromkeys(["held", "system", "id", "name", "value", "reason"], pl.Utf8)
CI, ASSET = "C2 ITSM CI", "Hector asset"
HOW = {  # the pairs `link` will not replace, and how they are held
    "linked": "by its external ref in Hector", "local": "by this tool's link table: a sync linked or created them",
    "pinned": "pinned with hector-sync link, not yet synced",
}
UTC_TEXT = "strftime(timezone('UTC', {}), '%Y-%m-%d %H:%M:%S') || ' UTC'"


class Refused(Exception):
    """A pin or unpin that would be wrong, or a category that cannot be read: nothing was written."""


def _held_sql(plan: CategoryPlan) -> str:
    """One row per item of each held group (HELD_SCHEMA, and `rank`): the item held first,
    then its candidates. Pairing reads no value of the assets, so none is made canonical."""
    key = lit(plan.key)
    ci_value = trimmed(c2_column(plan.identify_source)) if plan.identify_source else "NULL"
    asset_column = identify_column(plan)
    asset_value = trimmed("a." + asset_column) if asset_column else "NULL"
    group = "'identify_by ' || " + quoted("groups.identify_value")
    create = "'create of a CI from asset ' || asset_id"
    return f"""
        WITH h AS MATERIALIZED ({hector_assets(plan, whole=False, values=())}), c AS MATERIALIZED ({listed_cis(plan, raw=())}),
        {pairs(plan)},
        held_create AS (
            SELECT p.asset_id, p.name, p.recorded_at, arg_max(x.message, x.recorded_at) AS reason
            FROM pending_create p JOIN change_history x
                ON x.category_key = p.category_key AND x.action = 'create_ci' AND x.outcome = 'held'
                AND x.item = CAST(p.asset_id AS VARCHAR) AND x.recorded_at >= p.recorded_at
            WHERE p.category_key = {key} AND p.asset_id IN (SELECT id FROM unref)
              AND p.asset_id NOT IN (SELECT asset_id FROM pair)
            GROUP BY ALL
        ), groups AS (SELECT DISTINCT identify_value, ci_id, asset_id FROM ambiguous
        ), ci_raw AS (
            SELECT ci_id, any_value({ci_value}) AS value FROM c2_ci
            WHERE category_key = {key} AND ci_id IN (SELECT ci_id FROM groups) GROUP BY ci_id
        ), reasons AS (SELECT identify_value, any_value(ambiguity) AS reason FROM ci_ambiguity GROUP BY ALL)
        SELECT DISTINCT {group} AS held, '{CI}' AS system, groups.ci_id AS id, c.ci_name AS name, r.value,
               why.reason, 0 AS rank
        FROM groups JOIN c ON c.ci_id = groups.ci_id LEFT JOIN ci_raw r ON r.ci_id = groups.ci_id
        JOIN reasons why ON why.identify_value = groups.identify_value
        UNION ALL
        SELECT DISTINCT {group}, '{ASSET}', CAST(groups.asset_id AS VARCHAR), a.title, {asset_value}, why.reason, 1
        FROM groups JOIN hector_asset a ON a.category_key = {key} AND a.id = groups.asset_id
        JOIN reasons why ON why.identify_value = groups.identify_value
        UNION ALL
        SELECT {create}, '{ASSET}', CAST(asset_id AS VARCHAR), {trimmed('a.title')}, held_create.name,
               held_create.reason, 0
        FROM held_create JOIN hector_asset a ON a.category_key = {key} AND a.id = held_create.asset_id
        UNION ALL
        SELECT {create}, '{CI}', ci_id, c.ci_name, c.ci_name,
               'named like its create, and modified ' || {UTC_TEXT.format('c.modified_at')}
               || ', after it was journalled ' || {UTC_TEXT.format('held_create.recorded_at')}, 1
        FROM intent JOIN held_create USING (asset_id) JOIN c USING (ci_id)
        ORDER BY held, rank, length(id), id
    """


def held_items(store: Store, plan: CategoryPlan) -> pl.DataFrame:
    """What the latest snapshots hold back in the category, as HELD_SCHEMA: per held group (an
    ambiguous identify_by value, or a held create) the item held, then the candidates to pin."""
    with store.connect() as con:
        # Without identify_by no pair is ambiguous, and without a journalled create none is held:
        # then there is nothing to find, and the statement (30 ms to plan) is not run.
        if not plan.identify_source and not scalar(
                con, "SELECT count(*) FROM pending_create WHERE category_key = ?", [plan.key]):
            return pl.DataFrame(schema=HELD_SCHEMA)
        frame = executed(con, _held_sql(plan))
    return frame.select(list(HELD_SCHEMA)).cast(HELD_SCHEMA)


@dataclass(frozen=True)
class Pairing:
    """What the latest snapshots, the link table and the unlinks not yet done say of one CI and
    one asset, and of the pairs either is in."""

    ci_name: str | None
    in_c2: bool  # in the latest C2 snapshot of the category
    asset_title: str | None
    in_hector: bool
    asset_ref: str | None  # the c2 external ref the asset carries in the latest Hector snapshot
    pairs: list[tuple[str, int, str]]  # (CI, asset, match) as `match.pairs` finds them now
    links: list[tuple[str, int, str | None]]  # rows of the link table: (CI, asset, pinned_by)
    unlinks: list[tuple[str, int]]  # unlinks whose ref no read has shown gone yet

    def match(self, ci_id: str, asset_id: int) -> str | None:
        return next((m for c, a, m in self.pairs if (c, a) == (ci_id, asset_id)), None)

    def link(self, ci_id: str, asset_id: int) -> tuple[str, int, str | None] | None:
        return next((row for row in self.links if row[:2] == (ci_id, asset_id)), None)


def _pairing(stored: StoredCategory, ci_id: str, asset_id: int) -> Pairing:
    plan = stored.reconciler.plan
    mine = f"category_key = {lit(plan.key)} AND (ci_id = $ci OR asset_id = $asset)"
    sql = f"""
        WITH h AS MATERIALIZED ({hector_assets(plan)}), c AS MATERIALIZED ({listed_cis(plan, raw=())}), {pairs(plan)}
        SELECT 'pair' AS kind, ci_id, asset_id, match AS text FROM pair WHERE ci_id = $ci OR asset_id = $asset
        UNION ALL SELECT 'link', ci_id, asset_id, pinned_by FROM link WHERE {mine}
        UNION ALL SELECT 'unlink', ci_id, asset_id, NULL FROM unlink WHERE {mine}
        UNION ALL SELECT 'ci', ci_id, NULL, ci_name FROM c WHERE ci_id = $ci
        UNION ALL SELECT 'asset', c2_ref, id, title FROM h WHERE id = $asset
    """
    with stored.store.connect() as con:
        rows = con.execute(sql, {"ci": ci_id, "asset": asset_id}).fetchall()
    of = {kind: [(c, a, t) for k, c, a, t in rows if k == kind] for kind in ("pair", "link", "unlink", "ci", "asset")}
    return Pairing(
        ci_name=next((t for *_, t in of["ci"]), None), in_c2=bool(of["ci"]),
        asset_title=next((t for *_, t in of["asset"]), None), in_hector=bool(of["asset"]),
        asset_ref=next((c for c, *_ in of["asset"]), None),
        pairs=of["pair"], links=of["link"], unlinks=[(c, a) for c, a, _ in of["unlink"]],
    )


def _store(config: SyncConfig) -> Store:
    """The sync's file, if a sync made it: opening a missing one would leave an empty file
    where the operator expects data."""
    path = config.storage.duckdb_path
    if not path.exists():
        raise Refused(f"{text(path)} does not exist: no sync has run with this configuration")
    return Store(path)


def _stored(config: SyncConfig, key: str, store: Store) -> StoredCategory:
    """The category as the file keeps it, once both systems were read; else Refused saying why."""
    stored = StoredCategory(config, config.category(key), store)
    if not all(system in stored.reads for system in SYSTEM_NAMES):
        raise Refused(f"category '{key}' has not been read yet; hector-sync plan --category {key} reads both "
                      "systems, writing to neither")
    return stored


def _named(system: str, item: object, name: str | None) -> str:
    return f"{system} {text(item)}" + (f" {value(name)}" if name else "")


# --- held ----------------------------------------------------------------------------------


def print_held(config: SyncConfig, keys: list[str]) -> int:
    """Print, per category, each held group with its candidates; 1 when there is no DuckDB file
    or a category's mapping changed since its snapshots, 0 otherwise (a category never read
    holds nothing yet, and says so)."""
    try:
        store = _store(config)
    except Refused as missing:
        print(f"hector-sync held: {missing}", file=sys.stderr)
        return 1
    status = 0
    for key in keys:
        try:
            stored = _stored(config, key, store)
            frame = held_items(stored.store, stored.reconciler.plan)
        except Refused as unread:
            print(f"{key}: {unread}")
            continue
        except MappingInvalid as invalid:
            print(f"{key}: cannot tell what is held: {invalid}")
            status = 1
            continue
        groups = frame.partition_by("held", maintain_order=True)
        if not groups:
            print(f"{key}: nothing held")
            continue
        print(f"{key}: {len(groups)} held back; pin the right pair with: "
              f"hector-sync link --category {key} CI_ID ASSET_ID")
        for group in groups:
            rows = group.rows(named=True)
            header = rows[0]["reason"]
            print(f"  {text(header)}")
            lines = [(r["system"], text(r["id"]), value(r["name"]), value(r["value"]),
                      "" if r["reason"] == header else f"— {text(r['reason'])}") for r in rows]
            widths = [max(len(line[i]) for line in lines) for i in range(4)]
            for line in lines:
                print("    " + "  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[4]]).rstrip())
    return status


# --- link and unlink -----------------------------------------------------------------------


def _note(stored: StoredCategory, action: str, outcome: str, ci_id: str, asset_id: int, *, linked: bool,
          message: str) -> dict[str, object]:
    """The history row of a pin (`linked`) or an unpin, named like the sync's link rows of the
    category: toward Hector the CI is the item, toward C2 ITSM the asset."""
    toward = TO_C2 if stored.category.direction is TO_C2 else TO_HECTOR
    item, target = (str(asset_id), ci_id) if toward is TO_C2 else (ci_id, str(asset_id))
    ref = f"c2:{ci_id}"
    return {
        "category_key": stored.key, "direction": toward.value, "action": action, "item": item, "target_id": target,
        "field": "external_ref", "old": None if linked else ref, "new": ref if linked else None,
        "outcome": outcome, "message": message, "recorded_at": datetime.now(UTC), "operator": getpass.getuser(),
    }


def _pin(stored: StoredCategory, ci_id: str, asset_id: int) -> str:
    """Pin CI ↔ asset after checking it against the latest snapshots; what was done, in words."""
    key, found = stored.key, _pairing(stored, ci_id, asset_id)
    missing = [f"{system} {text(item)}" for system, item, there in
               ((CI, ci_id, found.in_c2), (ASSET, asset_id, found.in_hector)) if not there]
    if missing:
        read = ", ".join(f"{name} {r['read_at']:%Y-%m-%d %H:%M:%S} UTC"
                         for s, name in SYSTEM_NAMES.items() if (r := stored.reads.get(s)))
        raise Refused(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in the latest snapshots "
                      f"of category '{key}' (read {read}): check the id, or read both systems again with "
                      f"hector-sync plan --category {key}")
    pair = f"{_named(CI, ci_id, found.ci_name)} ↔ {_named(ASSET, asset_id, found.asset_title)}"
    if (match := found.match(ci_id, asset_id)) in HOW:
        return f"{key}: {pair} are already linked ({HOW[match]}); nothing to do"
    for c, a, m in found.pairs:
        if m in HOW:
            other = f"{CI} {text(ci_id)} is already linked to {ASSET} {a}" if c == ci_id else \
                f"{ASSET} {asset_id} is already linked to {CI} {text(c)}"
            raise Refused(f"{other} ({HOW[m]}); if that link is wrong, take it back first with "
                          f"hector-sync unlink --category {key} {text(c)} {a}, then link")
    if found.asset_ref is not None and (found.asset_ref, asset_id) not in found.unlinks:
        raise Refused(f"{ASSET} {asset_id} carries the external ref c2:{text(found.asset_ref)} in Hector, which "
                      f"names no CI of category '{key}' that could be its pair; correct or remove that ref in "
                      "Hector first")
    stored.state.pin(key, ci_id, asset_id, _note(
        stored, "link", "pinned", ci_id, asset_id, linked=True,
        message="pinned with hector-sync link: the next sync links them"))
    apart = [(c, a) for c, a in found.unlinks if (c, a) != (ci_id, asset_id)]
    then = ("the next sync links them (the asset gets the CI's external ref) and syncs their fields as usual"
            if not apart else
            f"the next sync first removes the external ref c2:{text(apart[0][0])} from {ASSET} {apart[0][1]} "
            "(hector-sync unlink), and the sync after links them")
    return f"{key}: pinned {pair}; {then}"


def _unpin(stored: StoredCategory, ci_id: str, asset_id: int) -> str:
    """Take a pin or a written pair back (see the module); what was done, in words."""
    key, found = stored.key, _pairing(stored, ci_id, asset_id)
    pair = f"{_named(CI, ci_id, found.ci_name)} ↔ {_named(ASSET, asset_id, found.asset_title)}"
    if (ci_id, asset_id) in found.unlinks:
        return f"{key}: {pair} are unlinked already; the next sync removes the asset's external ref"
    link = found.link(ci_id, asset_id)
    # Written, or maybe written since the latest read: the asset carries the ref, or a sync linked them.
    written = found.asset_ref == ci_id or (link is not None and link[2] is None)
    if not written and link is None:
        why = {"identified": "identify_by matches them; to keep them apart, correct the value in one system",
               "recovered": "the journal of C2 ITSM creates finds this CI as the asset's create"}
        match = found.match(ci_id, asset_id)
        raise Refused(f"{pair} are not linked, so there is nothing to unlink"
                      + (f"; the next sync links them: {why[match]}" if match in why else ""))
    if written:
        then = (f"the next sync removes the external ref c2:{text(ci_id)} from the asset in Hector; from the sync "
                "after, both are matched as new items")
    else:
        then = "no sync wrote it: the next sync matches both as new items"
    note = _note(stored, "unlink", "unpinned", ci_id, asset_id, linked=False,
                 message=f"unpinned with hector-sync unlink: {then}")
    stored.state.unpin(key, ci_id, asset_id, note, remove_ref=written)
    return f"{key}: unlinked {pair}; {then}"


def change_pin(config: SyncConfig, key: str, ci_id: str, asset_id: int, *, link: bool) -> int:
    """`hector-sync link` (`link`) or `unlink`: the one-line outcome on stdout and 0, or why it
    was refused on stderr and 1, nothing written. Never while a run of the category is on."""
    command = "link" if link else "unlink"
    try:
        stored = _stored(config, key, _store(config))
        with stored.store.category_lock(key, f"hector-sync {command} by {getpass.getuser()}", wait_s=PIN_WAIT_S):
            print(_pin(stored, ci_id, asset_id) if link else _unpin(stored, ci_id, asset_id))
    except (Refused, CategoryBusy, MappingInvalid) as refused:
        print(f"hector-sync {command}: {refused}", file=sys.stderr)
        return 1
    return 0
