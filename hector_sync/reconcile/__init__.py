"""Pure reconciliation: tables in, change sets out; no network, no Dagster.

`Reconciler` runs the SQL of `normalize`, `match` and `changes` on a DuckDB connection holding
the documented tables (the sync's file, or an in-memory database in tests), so the Dagster
assets and `hector-sync plan` compute exactly the same change set.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from hector_sync.config import CategoryConfig
from hector_sync.reconcile import changes, normalize
from hector_sync.store import scalar
from hector_sync.reconcile.mapping import CategoryPlan, Kind, Scope, build_plan


@dataclass(frozen=True)
class Derived:
    models: int
    assets: int
    rejected_cis: int


@dataclass(frozen=True)
class Reconciler:
    plan: CategoryPlan
    default_stockroom: str

    @classmethod
    def for_category(
        cls, category: CategoryConfig, attribute_kinds: dict[tuple[Scope, str], Kind], default_stockroom: str
    ) -> Reconciler:
        return cls(build_plan(category, attribute_kinds), default_stockroom)

    def derive(self, con: duckdb.DuckDBPyConnection) -> Derived:
        """Replace the category's desired models, desired assets and rejected CIs."""
        key = [self.plan.key]
        for table, sql in (
            ("desired_model", normalize.desired_models(self.plan)),
            ("desired_asset", normalize.desired_assets(self.plan)),
            ("rejected_ci", normalize.rejected_cis(self.plan)),
        ):
            con.execute(f"DELETE FROM {table} WHERE category_key = ?", key)
            con.execute(f"INSERT INTO {table} BY NAME {sql}")
        counts = [
            int(scalar(con, f"SELECT count(DISTINCT {col}) FROM {t} WHERE category_key = ?", key) or 0)
            for t, col in (("desired_model", "model_key"), ("desired_asset", "ci_id"), ("rejected_ci", "ci_id"))
        ]
        return Derived(*counts)

    def changes(self, con: duckdb.DuckDBPyConnection, *, full_read: bool) -> pl.DataFrame:
        sql = changes.hector_change_set(self.plan, full_read=full_read, default_stockroom=self.default_stockroom)
        return con.sql(sql).pl().cast(changes.CHANGE_SCHEMA)
