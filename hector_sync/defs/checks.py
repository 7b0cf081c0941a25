"""What must hold before anything is written, as blocking checks on each change set.

Blocking: when one fails, Dagster skips that direction's writeback in the run and fails it,
and the check's description (with the numbers) is what the failure e-mail quotes.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from hector_sync.config import Direction
from hector_sync.plans import Plan
from hector_sync.sync import CategorySync


def change_set_checks(asset: str, direction: Direction) -> list[dg.AssetCheckSpec]:
    items = direction.target_items
    return [
        dg.AssetCheckSpec("mapping_valid", asset=asset, blocking=True,
                          description="Every name of the category's mapping exists in C2 ITSM and Hector."),
        dg.AssetCheckSpec("unique_ci_ids", asset=asset, blocking=True,
                          description="C2 ITSM listed each CI once; a repeated id would pair one CI twice."),
        dg.AssetCheckSpec("change_size_guard", asset=asset, blocking=True,
                          description=f"The change set retires or moves at most max_change_fraction of the "
                          f"linked {items}, and the source system did not answer empty where it had items."),
    ]


def evaluate_change_set(
    sync: CategorySync, direction: Direction, problems: list[str] | None, plan: Plan | None, *, allowed: bool
) -> Iterator[dg.AssetCheckResult]:
    """The three checks; a category with nothing to sync this way passes them all, saying so.
    The guard's is the verdict the plan was made with: what its writeback will find."""
    if problems is None:
        for name in ("mapping_valid", "unique_ci_ids", "change_size_guard"):
            yield dg.AssetCheckResult(check_name=name, passed=True, description="nothing to sync this way")
        return
    yield dg.AssetCheckResult(
        check_name="mapping_valid", passed=not problems,
        description="; ".join(problems) or "all names resolved",
    )
    repeated = sync.repeated_ci_ids()
    yield dg.AssetCheckResult(
        check_name="unique_ci_ids", passed=repeated == 0, metadata={"repeated_ci_ids": repeated},
        description=f"C2 ITSM listed {repeated} CI ids more than once" if repeated else "every CI id is unique",
    )
    if plan is None:  # a broken mapping: nothing was planned, so nothing can be too large
        yield dg.AssetCheckResult(check_name="change_size_guard", passed=True, description="nothing was planned")
        return
    refusal, risky, linked = plan.guard_refusal, plan.risky or 0, plan.linked or 0
    yield dg.AssetCheckResult(
        check_name="change_size_guard", passed=refusal is None or allowed,
        metadata={"retire_or_move": risky, "linked": linked, "fraction": round(risky / linked if linked else 0.0, 4),
                  "plan_id": plan.plan_id},
        description=(f"{refusal} (let through by --allow-large-change)" if refusal and allowed
                     else refusal or f"{risky} of {linked} linked {direction.target_items} retired or moved"),
    )
