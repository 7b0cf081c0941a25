"""What the sync keeps in the DuckDB file between its steps and runs, besides its plans.

Here are the questions the steps ask of the file and the facts they note in it: which read each
snapshot was and with which resolution (`snapshot_state`), the kept resolutions
(`category_catalog`), the CI ↔ asset links and the per_field baseline, the journal of CI creates
in flight (`pending_create`), what a run did to items (`outcome_counts`), and an operator's pins
and unlinks (`hector_sync.held`). The plans and
their rows are `hector_sync.plans.PlanBook`'s.

Why a separate class: `store.Store` is the file itself (schema, locked short-lived connections,
the snapshot swap that keeps it whole), and knows no step of the sync; these are the sync's own
vocabulary over it. `SyncState(store)` is shaped like `PlanBook(store)`: cheap to build, it holds
no connection, each call takes one of the store's, so a caller builds it where it needs it
(`SyncState(self.store).snapshot_states(...)`) and passes only the `Store` around.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from hector_sync.store import Store, scalar

KEPT_CATALOGS = 20  # resolutions kept per category, beyond those a snapshot still names
# What a run did to items, as `hector-sync sync` and the writeback's metadata count it.
SUMMARY_COLUMNS = ("created", "updated", "moved", "retired", "unchanged", "skipped", "failed")


@dataclass(frozen=True)
class SyncState:
    """The sync's reads, resolutions, links, baseline, create journal and outcomes in `store`."""

    store: Store

    # --- reads and resolutions -------------------------------------------------------------

    def record_snapshot(
        self, category_key: str, system: str, read_kind: str, run_id: str | None, row_count: int, catalog_id: str,
    ) -> int | None:
        """Note a finished read and the resolution it read with; returns the previous row count
        (for the empty-category guard)."""
        with self.store.connect() as con:
            # The last count that had rows: a refused empty read must not lower the bar for the next.
            previous = scalar(
                con,
                "SELECT coalesce(nullif(row_count, 0), previous_row_count) FROM snapshot_state "
                "WHERE category_key = ? AND system = ?",
                [category_key, system],
            )
            con.execute(
                "INSERT OR REPLACE INTO snapshot_state (category_key, system, read_kind, read_at, run_id, row_count, "
                "previous_row_count, catalog_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [category_key, system, read_kind, datetime.now(UTC), run_id, row_count, previous, catalog_id],
            )
        return None if previous is None else int(previous)

    def snapshot_states(self, category_key: str) -> dict[str, dict[str, object]]:
        """The category's last read per system read so far."""
        rows = self.store.query("SELECT * FROM snapshot_state WHERE category_key = ?", [category_key])
        return {row["system"]: row for row in rows.iter_rows(named=True)}

    def save_catalog(self, category_key: str, run_id: str | None, mapping: str, resolution: str) -> str:
        """Keep a category's resolution (`mapping`: the configured mapping it resolved, as JSON)
        and return its id; the last KEPT_CATALOGS per category stay, for the snapshots that read
        with them."""
        now = datetime.now(UTC)
        catalog_id = f"{category_key}.{now:%Y%m%dT%H%M%S%fZ}"
        with self.store.connect() as con:
            con.execute("INSERT INTO category_catalog VALUES (?, ?, ?, ?, ?, ?)",
                        [category_key, catalog_id, run_id, now, mapping, resolution])
            con.execute(
                """DELETE FROM category_catalog WHERE category_key = ? AND catalog_id NOT IN (
                       SELECT catalog_id FROM category_catalog WHERE category_key = ?
                       ORDER BY resolved_at DESC LIMIT ?)
                   AND catalog_id NOT IN (SELECT catalog_id FROM snapshot_state WHERE catalog_id IS NOT NULL)""",
                [category_key, category_key, KEPT_CATALOGS])
        return catalog_id

    def catalog(self, category_key: str, catalog_id: str | None = None) -> dict[str, object] | None:
        """A kept resolution of the category (`catalog_id`), else its latest."""
        rows = self.store.query(
            "SELECT * FROM category_catalog WHERE category_key = ? AND (? IS NULL OR catalog_id = ?) "
            "ORDER BY resolved_at DESC LIMIT 1", [category_key, catalog_id, catalog_id])
        return rows.row(0, named=True) if rows.height else None

    # --- what a run did ----------------------------------------------------------------------

    def outcome_counts(self, category_key: str, direction: str, run_id: str, plan_id: str | None) -> dict[str, int]:
        """Items (not field rows) per summary column for one run and direction; `unchanged`
        counts the pairs of the plan the run applied that already agreed."""
        frame = self.store.query(
            """
            SELECT CASE WHEN outcome IN ('refused', 'conflict', 'held') THEN 'failed'
                        WHEN outcome IN ('created', 'already_there') AND action IN ('create_asset', 'create_ci') THEN 'created'
                        WHEN outcome IN ('linked', 'unlinked', 'reverted', 'reactivated')
                             OR (outcome = 'updated' AND action IN ('update_asset', 'update_ci')) THEN 'updated'
                        WHEN outcome IN ('moved', 'retired', 'skipped') THEN outcome END AS kind,
                   count(DISTINCT item) AS n
            FROM change_history WHERE run_id = $run AND category_key = $key AND direction = $direction GROUP BY 1
            UNION ALL
            SELECT 'unchanged', coalesce((SELECT unchanged FROM plan WHERE plan_id = $plan),  -- listed before they were counted
                                         (SELECT count(*) FROM change_set WHERE plan_id = $plan AND action = 'unchanged'))
            """,
            {"run": run_id, "key": category_key, "direction": direction, "plan": plan_id},
        )
        counts = dict.fromkeys(SUMMARY_COLUMNS, 0)
        counts.update({k: int(n) for k, n in frame.iter_rows() if k})
        return counts

    # --- links and the per_field baseline ----------------------------------------------------

    def upsert_links(self, category_key: str, links: list[tuple[str, int]], run_id: str | None) -> None:
        """Keep CI ↔ asset links; a CI created from an asset is no longer pending."""
        if not links:
            return
        now = datetime.now(UTC)
        with self.store.connect() as con:
            con.execute("BEGIN")
            con.executemany(
                "INSERT OR REPLACE INTO link (category_key, ci_id, asset_id, linked_at, run_id, pinned_by) "
                "VALUES (?, ?, ?, ?, ?, NULL)",  # written by a sync: no longer a pin
                [(category_key, ci, asset, now, run_id) for ci, asset in links],
            )
            con.execute(
                "DELETE FROM pending_create WHERE category_key = ? AND asset_id IN (SELECT unnest(?::BIGINT[]))",
                [category_key, [asset for _, asset in links]],
            )
            con.execute("COMMIT")

    def upsert_baseline(self, category_key: str, agreed: list[tuple[str, int, str, str | None]], run_id: str | None) -> None:
        """(ci id, asset id, field, value) pairs both sides now hold, after our own writes."""
        now = datetime.now(UTC)
        self._put("baseline", [(category_key, ci, asset, f, value, now, run_id) for ci, asset, f, value in agreed])

    # --- the journal of CI creates (see hector_sync.writeback.c2) ----------------------------

    def record_intents(self, category_key: str, intents: list[tuple[int, str]], run_id: str | None) -> None:
        """Journal (asset id, CI name) of CIs about to be created, before the calls are made."""
        now = datetime.now(UTC)
        self._put("pending_create", [(category_key, asset, name, now, run_id) for asset, name in intents])

    def journalled_creates(self, category_key: str) -> dict[int, tuple[datetime, datetime | None]]:
        """Every journalled CI create of the category: asset id → (when it was journalled, when
        a writeback first held it after that, or None).

        A hold is a `held` create_ci row in change_history at or after the journal entry: C2
        ITSM gave that create no certain answer (a 5xx, a lost answer, a timeout), or another
        writeback had sent it; either way it may have landed, and it waits for a later read
        (see `hector_sync.writeback.c2`). An entry never held is from a run killed before it
        heard back. Sending the create again journals it anew, so older holds no longer count.
        """
        frame = self.store.query(
            """
            SELECT p.asset_id, any_value(p.recorded_at), min(h.recorded_at)
            FROM pending_create p LEFT JOIN change_history h
                ON h.category_key = p.category_key AND h.action = 'create_ci' AND h.outcome = 'held'
                AND h.item = CAST(p.asset_id AS VARCHAR) AND h.recorded_at >= p.recorded_at
            WHERE p.category_key = ? GROUP BY p.asset_id
            """,
            [category_key],
        )
        return {asset: (at, held) for asset, at, held in frame.iter_rows()}

    def settle_intents(self, category_key: str) -> None:
        """Journalled creates whose asset now carries the external ref are settled."""
        with self.store.connect() as con:
            con.execute(
                "DELETE FROM pending_create WHERE category_key = ? AND asset_id IN "
                "(SELECT id FROM hector_asset WHERE category_key = ? AND c2_ref IS NOT NULL)",
                [category_key, category_key],
            )

    def drop_intents(self, category_key: str, asset_ids: list[int]) -> None:
        """Creates C2 ITSM refused: nothing was made, so nothing is to be found again."""
        if asset_ids:
            with self.store.connect() as con:
                con.execute(
                    "DELETE FROM pending_create WHERE category_key = ? AND asset_id IN (SELECT unnest(?::BIGINT[]))",
                    [category_key, asset_ids],
                )

    # --- an operator's pins and unlinks (see hector_sync.held) -------------------------------

    def pin(self, category_key: str, ci_id: str, asset_id: int, note: dict[str, object]) -> None:
        """Pin CI ↔ asset in the link table, where the next sync finds it (match `pinned`),
        instead of any stale link of either and any unlink of this very pair; `note` goes to the
        history in the same transaction."""
        with self.store.connect() as con:
            con.execute("BEGIN")
            con.execute("DELETE FROM link WHERE category_key = ? AND (ci_id = ? OR asset_id = ?)",
                        [category_key, ci_id, asset_id])
            con.execute("DELETE FROM unlink WHERE category_key = ? AND ci_id = ? AND asset_id = ?",
                        [category_key, ci_id, asset_id])
            con.execute("INSERT INTO link (category_key, ci_id, asset_id, linked_at, pinned_by) VALUES (?, ?, ?, ?, ?)",
                        [category_key, ci_id, asset_id, note["recorded_at"], note["operator"]])
            _note(con, note)
            con.execute("COMMIT")

    def unpin(self, category_key: str, ci_id: str, asset_id: int, note: dict[str, object], *, remove_ref: bool) -> None:
        """Take a pair back out of the link table; with `remove_ref` (the asset carries the CI's
        ref) ask the next sync to remove the ref, until a read shows it gone (`settle_unlinks`)."""
        with self.store.connect() as con:
            con.execute("BEGIN")
            con.execute("DELETE FROM link WHERE category_key = ? AND ci_id = ? AND asset_id = ?",
                        [category_key, ci_id, asset_id])
            if remove_ref:
                con.execute("INSERT OR REPLACE INTO unlink VALUES (?, ?, ?, ?, ?)",
                            [category_key, ci_id, asset_id, note["recorded_at"], note["operator"]])
            _note(con, note)
            con.execute("COMMIT")

    def settle_unlinks(self, category_key: str) -> None:
        """An unlink is done once a Hector snapshot read after it shows its asset without the
        CI's ref (one read before it may predate the very write that put the ref there)."""
        with self.store.connect() as con:
            con.execute(
                """DELETE FROM unlink u WHERE category_key = $key
                   AND requested_at < (SELECT read_at FROM snapshot_state
                                       WHERE category_key = $key AND system = 'hector')
                   AND NOT EXISTS (SELECT 1 FROM hector_asset h WHERE h.category_key = $key AND h.id = u.asset_id
                                   AND h.c2_ref = u.ci_id)""",
                {"key": category_key},
            )

    def _put(self, table: str, rows: list[tuple[object, ...]]) -> None:
        """INSERT OR REPLACE whole `rows`, in `table`'s column order; nothing at all for none."""
        if rows:
            with self.store.connect() as con:
                con.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)


def _note(con: duckdb.DuckDBPyConnection, row: dict[str, object]) -> None:
    """Append one row, named column by column, to the history."""
    columns, marks = ", ".join(row), ", ".join("?" * len(row))
    con.execute(f"INSERT INTO change_history ({columns}) VALUES ({marks})", list(row.values()))
