"""Pure reconciliation: tables in, change sets out; no network, no Dagster.

`Reconciler` runs the SQL of `normalize`, `match`, `to_hector` and `to_c2` (or `undo`), and
then `requests`, on a DuckDB connection holding the documented tables (the sync's file, or an
in-memory database in tests): no step of a run, and no test, computes a change set any other
way, and each row carries the request it makes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from hector_sync.config import CategoryConfig, Direction
from hector_sync.reconcile import normalize, requests, to_c2, to_hector, undo
from hector_sync.reconcile.changes import CHANGE_SCHEMA, ChangeSet, entries, row_order
from hector_sync.reconcile.mapping import ApiNames, CategoryPlan, Kind, Scope, build_plan
from hector_sync.reconcile.match import digest_assets, hector_assets, hector_models, pairs
from hector_sync.reconcile.normalize import lit
from hector_sync.store import executed, scalar


SMALL_ITEMS = 100_000  # CIs and assets of a category, below which its change set is executed once
# A hash of each listing row of the category $key, and the CIs whose rows differ from those of
# the last derive (`derived_ci`), either way.
LISTED_HASHES = "SELECT ci_id, hash(c) AS row_hash FROM c2_ci c WHERE category_key = $key"
CHANGED_CIS = """
    WITH was AS (SELECT ci_id, row_hash FROM derived_ci WHERE category_key = $key)
    SELECT DISTINCT coalesce(l.ci_id, w.ci_id) AS ci_id
    FROM listed_hash l FULL JOIN was w ON w.ci_id = l.ci_id AND w.row_hash = l.row_hash
    WHERE l.ci_id IS NULL OR w.ci_id IS NULL
"""


@contextmanager
def _setting(con: duckdb.DuckDBPyConnection, name: str, value: str) -> Iterator[None]:
    """DuckDB's setting `name` as `value` for what the block runs. The setting is the whole
    engine's, so it is put back as it was for whatever the connection does next."""
    before = scalar(con, f"SELECT current_setting({lit(name)})")
    con.execute(f"SET {name} = {lit(value)}")
    try:
        yield
    finally:
        con.execute(f"SET {name} = {lit(str(before).lower())}")


def _unordered(con: duckdb.DuckDBPyConnection) -> AbstractContextManager[None]:
    """Every table here is read with ORDER BY or by key: letting DuckDB insert in any order
    keeps a million-CI category inside its memory limit instead of failing."""
    return _setting(con, "preserve_insertion_order", "false")


@dataclass(frozen=True)
class Derived:
    items: int  # desired assets (toward Hector) or desired CIs (toward C2 ITSM)
    rejected: int
    models: int = 0


@dataclass(frozen=True)
class Reconciler:
    plan: CategoryPlan
    default_stockroom: str

    @classmethod
    def for_category(
        cls, category: CategoryConfig, attribute_kinds: dict[tuple[Scope, str], Kind], default_stockroom: str,
        c2_types: dict[str, str] | None = None, api: ApiNames = ApiNames(),
    ) -> Reconciler:
        return cls(build_plan(category, attribute_kinds, c2_types, api), default_stockroom)

    def _replace(self, con: duckdb.DuckDBPyConnection, tables: dict[str, str]) -> None:
        for table, sql in tables.items():
            con.execute(f"DELETE FROM {table} WHERE category_key = ?", [self.plan.key])
            con.execute(f"INSERT INTO {table} BY NAME {sql}")

    def _count(self, con: duckdb.DuckDBPyConnection, table: str, column: str | None = None) -> int:
        """Rows of the category in `table`, or the distinct values of `column` (None: one row per item)."""
        counted = "*" if column is None else f"DISTINCT {column}"
        return int(scalar(con, f"SELECT count({counted}) FROM {table} WHERE category_key = ?", [self.plan.key]) or 0)

    def derive(self, con: duckdb.DuckDBPyConnection) -> Derived:
        """Bring the category's desired assets, rejected CIs and desired models (toward Hector) up
        to date with its CIs, normalizing each CI once.

        A CI's desired asset and rejections depend only on its own listing and these statements
        (the mapping and every setting they embed). While the statements are the same and every
        derived row is still there, only the CIs whose listing changed since the last derive
        (`derived_ci` keeps a hash of each listing) are normalized again: a daily resync that
        changed 1% of a million CIs derives 1% of them, one that changed none derives nothing.
        The models weigh every CI, so they are counted again from the desired assets."""
        key = self.plan.key
        normalized = "SELECT * FROM normalized_ci"
        tables = {
            "desired_asset": normalize.desired_assets(self.plan, normalized),
            "rejected_ci": normalize.rejected_cis(self.plan, normalized),
            "desired_model": normalize.desired_models(self.plan, normalize.desired_asset_rows(self.plan)),
        }
        ours = {"key": key, "source": hashlib.sha256(
            chr(0).join([normalize.normalized_cis(self.plan), *tables.values()]).encode()).hexdigest()}
        rows = " + ".join(f"(SELECT count(*) FROM {table} WHERE category_key = $key)" for table in tables)
        kept = con.execute(
            f"SELECT items, rejected, models FROM derive_state WHERE category_key = $key AND source = $source "
            f"AND rows = {rows}", ours).fetchall()
        among = None  # every CI of the category
        con.execute(f"CREATE OR REPLACE TEMP TABLE listed_hash AS {LISTED_HASHES}", {"key": key})
        if kept:
            con.execute(f"CREATE OR REPLACE TEMP TABLE changed_ci AS {CHANGED_CIS}", {"key": key})
            if not scalar(con, "SELECT count(*) FROM changed_ci"):
                con.execute("DROP TABLE changed_ci")
                con.execute("DROP TABLE listed_hash")
                return Derived(*kept[0])
            among = "ci_id IN (SELECT ci_id FROM changed_ci)"
        with _unordered(con):
            con.execute("BEGIN")  # a derive cut short leaves the last one's rows, hashes and state
            try:
                con.execute(f"CREATE TEMP TABLE normalized_ci AS {normalize.normalized_cis(self.plan, among)}")
                for table in ("derived_ci", *tables):
                    con.execute(f"DELETE FROM {table} WHERE category_key = $key"
                                + ("" if among is None or table == "desired_model" else f" AND {among}"), {"key": key})
                for table, sql in tables.items():
                    con.execute(f"INSERT INTO {table} BY NAME {sql}")
                con.execute("INSERT INTO derived_ci SELECT $key, ci_id, row_hash FROM listed_hash"
                            + ("" if among is None else f" WHERE {among}"), {"key": key})
                con.execute("DROP TABLE normalized_ci")
                derived = Derived(
                    items=self._count(con, "desired_asset"), rejected=self._count(con, "rejected_ci", "ci_id"),
                    models=self._count(con, "desired_model", "model_key"),
                )
                con.execute(f"INSERT OR REPLACE INTO derive_state SELECT $key, $source, $items, $rejected, $models, {rows}",
                            ours | {"items": derived.items, "rejected": derived.rejected, "models": derived.models})
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.execute("DROP TABLE IF EXISTS listed_hash")
                con.execute("DROP TABLE IF EXISTS changed_ci")
        return derived

    def derive_c2(self, con: duckdb.DuckDBPyConnection) -> Derived:
        """Replace the category's desired CIs and rejected assets (toward C2 ITSM)."""
        with _unordered(con):
            self._replace(con, {"desired_ci": to_c2.desired_cis(self.plan), "rejected_asset": to_c2.rejected_assets(self.plan)})
        return Derived(items=self._count(con, "desired_ci", "asset_id"), rejected=self._count(con, "rejected_asset", "asset_id"))

    def _large(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether the category has more than SMALL_ITEMS CIs and assets, which decides how its
        change set is planned and read."""
        items = scalar(con, "SELECT (SELECT count(*) FROM c2_ci WHERE category_key = ?) "
                            "+ (SELECT count(*) FROM hector_asset WHERE category_key = ?)", [self.plan.key] * 2)
        return int(items or 0) > SMALL_ITEMS

    def changes(self, con: duckdb.DuckDBPyConnection, direction: Direction, *, full_read: bool) -> ChangeSet:
        """The change set toward `direction`; `full_read` is the source side's last read."""
        large = self._large(con)
        if direction is Direction.C2_TO_HECTOR:
            con.execute(digest_assets(self.plan))  # the assets read since the last change set
            sql = to_hector.hector_change_set(self.plan, full_read=full_read, default_stockroom=self.default_stockroom,
                                              large=large)
        else:
            sql = to_c2.c2_change_set(self.plan, full_read=full_read)
        return self._requested(con, direction, sql, row_order(direction), large)

    def undo(self, con: duckdb.DuckDBPyConnection, direction: Direction, run_id: str) -> ChangeSet:
        """The change set that takes back what run `run_id` applied toward `direction`."""
        return self._requested(con, direction, undo.undo_change_set(self.plan, direction, run_id), undo.ORDER,
                               self._large(con))

    def _requested(self, con: duckdb.DuckDBPyConnection, direction: Direction, rows: str, order: str,
                   large: bool) -> ChangeSet:
        """The change rows of `rows` (SQL) with the request each makes, sorted by `order`.

        A category that is not `large` is executed once (the relation's double planning of
        this long statement is 60 ms of a 300-CI category); a larger one is read through a
        relation, which streams its rows (executing once peaks 80-360 MB higher at 1M CIs)."""
        sql = requests.with_requests(self.plan, direction, rows, order)
        with _unordered(con):
            if not large:
                return ChangeSet.split(executed(con, sql).cast(CHANGE_SCHEMA))
            try:
                frame = con.sql(sql).pl()
            except duckdb.OutOfMemoryException:
                # A first sync of a million CIs sorts ten million rows with a million request
                # bodies; two threads' sort can fail to spill them where one thread's does. A
                # fallback: under store.DUCKDB_SETTINGS' 768 MB the first attempt completes.
                with _setting(con, "threads", "1"):
                    frame = con.sql(sql).pl()
        return ChangeSet.split(frame.cast(CHANGE_SCHEMA))

    def agree(self, con: duckdb.DuckDBPyConnection, run_id: str | None) -> int:
        """Record, per linked pair and field, the value both sides hold now (per_field only):
        the baseline against which the next sync tells a change from an echo or a drift."""
        if not self.plan.per_field:
            return 0
        values = entries(self.plan, tuple(range(len(self.plan.targets))), "{name}", "v{i}", "h{i}")
        sql = f"""
            WITH hm AS ({hector_models(self.plan)}), h AS ({hector_assets(self.plan, models='hm')}),
            c AS ({normalize.normalized_cis(self.plan)}), {pairs(self.plan)},
            agreed AS (
                SELECT p.ci_id, p.asset_id,
                       unnest(list_filter({values}, lambda x: x.old IS NOT DISTINCT FROM x.new), recursive := true)
                FROM pair p JOIN c USING (ci_id) JOIN h ON h.id = p.asset_id
            )
            SELECT {lit(self.plan.key)} AS category_key, a.ci_id, a.asset_id, a.field, a.old AS value
            FROM agreed a LEFT JOIN baseline b
                ON b.category_key = {lit(self.plan.key)} AND b.ci_id = a.ci_id AND b.field = a.field
            WHERE b.ci_id IS NULL OR b.value IS DISTINCT FROM a.old OR b.asset_id IS DISTINCT FROM a.asset_id
        """
        with _unordered(con):  # the insert too: a first per_field sync agrees on every field of every pair
            changed = con.sql(sql).pl()
            if changed.height:
                con.register("agreed_now", changed)
                con.execute(
                    "INSERT OR REPLACE INTO baseline SELECT category_key, ci_id, asset_id, field, value, ?, ? "
                    "FROM agreed_now", [datetime.now(UTC), run_id],
                )
                con.unregister("agreed_now")
        return changed.height
