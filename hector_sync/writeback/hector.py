"""Executes a change set toward Hector: subcategories before assets, one API call per item.

Each call is the request its change rows carry (`reconcile.requests`), sent as stored, but for
the one value no plan can know: the `subcategory_id` of a model the same plan creates, left
null in the asset create's (or move's) body and filled in here from the subcategory create's
answer, or, on a rerun, from Hector's list (`_models_made_earlier`).

A create carries the `c2` external ref, so a create retried after a lost answer, or rerun after
a kill, gets Hector's 409 duplicate with the existing id: linked, never made twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from hector_sync.catalog import ResolvedCategory
from hector_sync.errors import Duplicate, InvalidData, NotFound, VersionConflict
from hector_sync.hector import HectorClient
from hector_sync.reconcile.requests import ASSET_ACTIONS
from hector_sync.writeback.base import Request, Row, Writeback, calls, items

MODEL_ACTIONS = ("create_asset", "move_asset")  # whose request names a subcategory


@dataclass(kw_only=True)
class HectorWriteback(Writeback):
    hector: HectorClient
    resolved: ResolvedCategory
    _models: dict[str, int] = field(default_factory=dict)  # model key → subcategory created by this plan
    _linked: dict[str, str] = field(default_factory=dict)  # CI → asset, linked after the plan's read
    what: str = "Hector writes"

    def planned_calls(self, changes: pl.DataFrame) -> int:
        return (calls(changes, "create_subcategory") + calls(changes, "update_subcategory")
                + calls(changes, "create_asset") + calls(changes, *ASSET_ACTIONS, by="target_id"))

    def write_all(self, changes: pl.DataFrame) -> None:
        for item, rows in items(changes, "create_subcategory"):
            self._create_subcategory(item, rows)
            self.called()
        for _, rows in items(changes, "update_subcategory"):
            self.write(rows, lambda r=rows: Request.of(r).send(self.hector))
            self.called()
        self.flush()  # a rerun after a kill finds these done, and never sends them again
        self._models_made_earlier(changes)
        creates = list(items(changes, "create_asset"))
        self._linked = self.linked_since("ci_id", [item for item, _ in creates], self.applying.hector_read_at)
        self.each(creates, self._create_asset)
        self.each(items(changes, *ASSET_ACTIONS, by="target_id"), lambda _, rows: self._update_asset(rows))
        self.record_reports(changes)

    def _models_made_earlier(self, changes: pl.DataFrame) -> None:
        """The ids of subcategories an earlier attempt at this plan created: their rows are done,
        so they are not in `changes`, and the snapshot was read before they existed. Found in
        Hector by the values that create sent; without them the assets of those models could
        not be created (or moved) by the rerun. Every row of a create or move names its model (a
        move's request may sit on the row of another action of its PATCH), and only the models this
        plan created are looked for."""
        needing = changes.filter(pl.col("action").is_in(MODEL_ACTIONS))["model_key"]
        missing = set(needing.drop_nulls().to_list()) - set(self._models)
        if not missing:
            return
        made = self.store.query(
            "SELECT * FROM change_set WHERE plan_id = ? AND action = 'create_subcategory' AND state = 'applied'",
            [self.applying.plan_id])
        sent = {_triple(Request.of(rows).body): item
                for item, rows in items(made, "create_subcategory") if item in missing}
        if not sent:
            return
        for page in self.hector.iter_subcategory_pages(self.resolved.hector_category_id):
            for subcategory in page:
                item = sent.get(_triple(subcategory))
                if item is not None:
                    self._models.setdefault(item, int(subcategory["id"]))

    def _with_model(self, rows: list[Row]) -> Request:
        """The rows' request, with the id of a subcategory this plan created where it names one."""
        request = Request.of(rows)
        if "subcategory_id" not in request.body or request.body["subcategory_id"] is not None:
            return request
        model_key = next(r["model_key"] for r in rows if r["action"] in MODEL_ACTIONS)
        return replace(request, body=request.body | {"subcategory_id": self._models.get(model_key)})

    def _create_subcategory(self, item: str, rows: list[Row]) -> None:
        try:
            created = Request.of(rows).send(self.hector)
            self._models[item] = int(created["id"])
            self.done(rows, "created")
        except Duplicate as dup:
            self._models[item] = int(dup.existing_id)
            self.done(rows, "already_there", f"Hector already had it as subcategory {dup.existing_id}")
        except (InvalidData, VersionConflict, NotFound) as refused:
            self.done(rows, "refused", str(refused))

    def _create_asset(self, item: str, rows: list[Row]) -> None:
        """Create the CI's asset, unless it exists already: linked since the plan was read, or
        made by an earlier attempt at this plan whose answer never got recorded (`sending`)."""
        request = self._with_model(rows)
        if request.body["subcategory_id"] is None:
            self.done(rows, "refused", "its subcategory could not be created")
            return
        earlier = self._linked.get(item)
        if earlier is None and rows[0].get("state") == "sending":
            found = self.hector.find_assets_by_external_ref("c2", item)
            earlier = str(found[0]["id"]) if found else None
        try:
            if earlier is not None:
                asset_id, outcome, message = int(earlier), "already_there", f"created earlier as asset {earlier}; not sent again"
            else:
                asset_id, outcome, message = int(request.send(self.hector)["id"]), "created", None
        except Duplicate as dup:
            # Ours already (a create whose answer was lost) only if it carries our external ref;
            # else the asset tag is taken by another asset, which must not be linked to this CI.
            ours = self.hector.find_assets_by_external_ref("c2", item)
            if not ours:
                self.done(rows, "refused", f"Hector refused the create: asset {dup.existing_id} already holds "
                          f"its asset tag {request.body.get('asset_tag')!r}, and asset tags are unique in a category")
                return
            asset_id = int(ours[0]["id"])
            outcome, message = "already_there", f"Hector already had it as asset {asset_id}"
        except (InvalidData, VersionConflict, NotFound) as refused:
            self.done(rows, "refused", str(refused))
            return
        for r in rows:
            r["target_id"] = str(asset_id)  # the history names the asset made: undo retires it
        self.done(rows, outcome, message)
        self.link(item, asset_id)
        self.agreed(item, asset_id, {r["field"]: r["new"] for r in rows})

    def _update_asset(self, rows: list[Row]) -> None:
        """One PATCH per asset, whatever its rows link, unlink, update, move or retire."""
        ci_id, asset_id = rows[0]["item"], int(rows[0]["target_id"])
        request = self._with_model(rows)
        if self.write(rows, lambda: request.send(self.hector)):
            if any(r["action"] == "link_asset" for r in rows):
                self.link(ci_id, asset_id)
            self.agreed(ci_id, asset_id, {r["field"]: r["new"] for r in rows if r["action"] in ("update_asset", "revert_drift")})


def _triple(fields: dict[str, Any]) -> tuple[str, str, str]:
    """A subcategory's identity as Hector compares it: maker, model, description, trimmed, any case."""
    maker, model, description = (str(fields.get(k) or "").strip().casefold() for k in ("maker", "model", "description"))
    return maker, model, description
