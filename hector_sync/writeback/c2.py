"""Executes a change set toward C2 ITSM: CIs created from assets, then updates and retires.

C2 ITSM has no idempotency key and no duplicate check, so a CI create is journalled before it
is sent (`pending_create`), the CI id is kept as a local link as soon as it is known, and the
asset gets the external ref right after. A rerun finds each CI through one of the three; a
create journalled after the C2 snapshot this change set was planned on is held, not resent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from hector_sync.c2 import C2Client
from hector_sync.catalog import ResolvedCategory
from hector_sync.errors import InvalidData, NotFound, Unavailable, VersionConflict
from hector_sync.hector import HectorClient
from hector_sync.reconcile.mapping import NAME_PSEUDO_FIELD
from hector_sync.writeback.base import Row, Writeback, calls, current_assets, items, typed

CREATE_BATCH = 100
CREATE_ATTEMPTS = 3  # a lost answer can hide an expired token's 401 as well as a success
LOOKBACK = timedelta(minutes=10)  # clock difference between us and C2 ITSM, generously
CI_ACTIONS = ("update_ci", "revert_drift", "retire_ci", "reactivate_ci")


@dataclass(kw_only=True)
class C2Writeback(Writeback):
    c2: C2Client
    hector: HectorClient
    resolved: ResolvedCategory
    _assets: dict[int, tuple[dict[str, Any], list[dict[str, Any]], int]] = field(default_factory=dict)
    _unsent: list[int] = field(default_factory=list)
    what: str = "C2 writes"

    def planned_calls(self, changes: pl.DataFrame) -> int:
        """A CI create is counted as one call (with the asset's external ref written after it)."""
        return calls(changes, "create_ci") + calls(changes, "link_ci") + calls(changes, *CI_ACTIONS, by="target_id")

    def write_all(self, changes: pl.DataFrame) -> None:
        creates = list(items(changes, "create_ci"))
        links = list(items(changes, "link_ci"))
        ids = pl.Series([item for item, _ in creates + links], dtype=pl.Utf8)
        self._assets = current_assets(self.store, self.plan.key, ids)
        self._create_cis(creates)
        self.each(links, self._link)
        self.each(items(changes, *CI_ACTIONS, by="target_id"), lambda _, rows: self._update_ci(rows))
        self.record_reports(changes)

    def _values(self, rows: list[Row]) -> tuple[str | None, dict[str, Any]]:
        """The CI name and the fields (by id, typed as C2 ITSM wants) of a group of rows."""
        name, fields = None, {}
        for r in rows:
            if r["field"] == NAME_PSEUDO_FIELD:
                name = r["new"]
            elif r["field"] in self.resolved.c2_fields:
                spec = self.resolved.c2_fields[r["field"]]
                fields[spec.id] = typed(spec.type, r["new"])
        return name, fields

    @cached_property
    def _target_names(self) -> dict[str, str]:
        """C2 field → the target name the baseline knows it by; once per writeback, not per CI."""
        return {t.source: t.name for t in self.plan.targets}

    def _agreed_rows(self, ci_id: str, asset_id: int, rows: list[Row]) -> None:
        names = self._target_names
        self.agreed(ci_id, asset_id, {names[r["field"]]: r["new"] for r in rows if r["field"] in names})

    def _create_cis(self, creates: list[tuple[str, list[Row]]]) -> None:
        read_at = self.applying.c2_read_at  # journalled or linked after the read the plan was computed from
        held = {a for a, at in self.store.pending_intents(self.plan.key).items() if read_at is None or at > read_at}
        done_since = self.linked_since("asset_id", [asset for asset, _ in creates], read_at)
        unsent = sum(int(asset) in held or asset in done_since for asset, _ in creates)
        if unsent and self.calls_done is not None and self.calls_done.total is not None:
            self.calls_done.expect(self.calls_done.total - unsent)  # held: not sent in this run
        for start in range(0, len(creates), CREATE_BATCH):
            batch = []
            for asset, rows in creates[start:start + CREATE_BATCH]:
                if asset in done_since:
                    for r in rows:
                        r["target_id"] = done_since[asset]
                    self.done(rows, "already_there", f"created earlier as CI {done_since[asset]}; not sent again")
                elif int(asset) in held:
                    self.done(rows, "held", "a CI create for this asset was sent after the C2 snapshot this "
                              "change set was planned on; the next sync finds that CI before creating any")
                else:
                    batch.append((asset, rows))
            self.store.record_intents(self.plan.key, [(int(a), self._values(r)[0] or "") for a, r in batch], self.run_id)
            self.each(batch, lambda asset, rows: self._create_ci(int(asset), rows))
            self.flush()
            self.store.drop_intents(self.plan.key, self._unsent)
            self._unsent = []

    def _create_ci(self, asset_id: int, rows: list[Row]) -> None:
        name, fields = self._values(rows)
        sent_at = datetime.now(UTC)
        try:
            ci_id = self._post_ci(name or "", fields, sent_at)
        except (InvalidData, NotFound) as refused:
            self.done(rows, "refused", str(refused))
            with self._lock:
                self._unsent.append(asset_id)
            return
        if ci_id is None:
            self.done(rows, "held", "the answer to its create was lost and several new CIs carry its name; "
                      "the next sync pairs it through the journal")
            return
        self.link(ci_id, asset_id)
        self._agreed_rows(ci_id, asset_id, rows)
        for r in rows:
            r["target_id"] = ci_id
        if self._put_ref(asset_id, ci_id):
            self.done(rows, "created")
        else:
            self.done(rows, "created", f"created as {ci_id}; the asset changed meanwhile, so the next sync "
                      "writes its external ref from the local link")

    def _post_ci(self, name: str, fields: dict[str, Any], sent_at: datetime) -> str | None:
        """Create the CI; when the answer is lost, look for it by name before anything is sent
        again: found once, it is ours; not found, the create never landed and is sent once more;
        found several times, None (the journal settles it on the next sync)."""
        ids = (self.resolved.cmdb_id, self.resolved.c2_category_id)
        for _ in range(CREATE_ATTEMPTS - 1):
            try:
                return str(self.c2.create_ci(*ids, name, fields)["id"])
            except Unavailable as lost:
                if lost.status is not None:
                    raise  # an answer that says the system is down: nothing was created
            found = self.c2.find_cis_named(*ids, name, sent_at - LOOKBACK)
            if len(found) > 1:
                return None
            if found:
                self.log(f"{self.plan.key}: the answer to creating CI '{name}' was lost; found it as {found[0]['id']}")
                return str(found[0]["id"])
        return str(self.c2.create_ci(*ids, name, fields)["id"])  # lost again now: the category fails

    def _link(self, asset: str, rows: list[Row]) -> None:
        if self._put_ref(int(asset), rows[0]["target_id"]):
            self.done(rows, "linked")
            self.link(rows[0]["target_id"], int(asset))
        else:
            self.done(rows, "conflict", "the asset changed since the snapshot; the next sync links it")

    def _put_ref(self, asset_id: int, ci_id: str) -> bool:
        """Give the asset the external ref to its CI, keeping its other refs."""
        _, refs, version = self._assets.get(asset_id, ({}, [], 0))
        body = {"external_refs": [r for r in refs if r.get("source") != "c2"] + [{"source": "c2", "id": ci_id}]}
        try:
            self.hector.update_asset(asset_id, version, body)
        except (VersionConflict, NotFound, InvalidData):
            return False
        return True

    def _update_ci(self, rows: list[Row]) -> None:
        """One PATCH per CI, whatever its rows update, revert or retire."""
        ci_id, asset_id = rows[0]["target_id"], int(rows[0]["item"])
        name, fields = self._values(rows)
        statuses = {r["new"] for r in rows if r["field"] == "status"}
        status = "retired" if "retired" in statuses else "active" if statuses else None
        if self.write(rows, lambda: self.c2.update_ci(
                ci_id, rows[0]["target_version"], name=name, status=status, fields=fields or None)):
            self._agreed_rows(ci_id, asset_id, [r for r in rows if r["action"] != "retire_ci"])
