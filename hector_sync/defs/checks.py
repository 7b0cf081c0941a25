"""What must hold before anything is written to Hector, as blocking checks on the change set.

Blocking: when one fails, Dagster skips the writeback of that run and fails it, and the check's
description (with the numbers) is what the failure e-mail quotes.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from hector_sync.reconcile.changes import Summary
from hector_sync.sync import CategorySync

ASSET = "hector_change_set"
CHANGE_SET_CHECKS = [
    dg.AssetCheckSpec("mapping_valid", asset=ASSET, blocking=True,
                      description="Every name of the category's mapping exists in C2 ITSM and Hector."),
    dg.AssetCheckSpec("unique_ci_ids", asset=ASSET, blocking=True,
                      description="C2 ITSM listed each CI once; a repeated id would make two assets."),
    dg.AssetCheckSpec("change_size_guard", asset=ASSET, blocking=True,
                      description="The change set retires or moves at most max_change_fraction of the "
                      "linked assets, and C2 did not answer empty where it had CIs."),
]


def evaluate_change_set(
    sync: CategorySync, problems: list[str] | None, summary: Summary | None, *, allowed: bool
) -> Iterator[dg.AssetCheckResult]:
    """The three checks; a category with nothing to sync passes them all, saying so."""
    if summary is None:
        for spec in CHANGE_SET_CHECKS:
            yield dg.AssetCheckResult(check_name=spec.name, passed=True, description="nothing to sync")
        return
    yield dg.AssetCheckResult(
        check_name="mapping_valid", passed=not problems,
        description="; ".join(problems or []) or "all names resolved",
    )
    repeated = sync.repeated_ci_ids()
    yield dg.AssetCheckResult(
        check_name="unique_ci_ids", passed=repeated == 0, metadata={"repeated_ci_ids": repeated},
        description=f"C2 ITSM listed {repeated} CI ids more than once" if repeated else "every CI id is unique",
    )
    refusal = sync.guard_refusal(summary)
    yield dg.AssetCheckResult(
        check_name="change_size_guard", passed=refusal is None or allowed,
        metadata={"retire_or_move": summary.risky, "linked": summary.linked, "fraction": round(summary.fraction, 4)},
        description=(f"{refusal} (let through by --allow-large-change)" if refusal and allowed
                     else refusal or f"{summary.risky} of {summary.linked} linked assets retired or moved"),
    )
