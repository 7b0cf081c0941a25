"""Executes a change set toward C2 ITSM: CIs created from assets, then updates and retires.

Each call is the request its change rows carry (`reconcile.requests`), sent as stored. The one
value no plan can know is the id of a CI it creates: the asset's external ref to it is written
right after the create answers, keeping the asset's other refs and sending the version of
Hector's snapshot (`_put_ref`, the only body this writer makes).

C2 ITSM has no idempotency key and no duplicate check, so a CI create is sent once (never
retried on an answer that leaves its outcome open, see `C2Client.create_ci`) and journalled
before it is sent (`pending_create`); the CI id is kept as a local link as soon as it is known,
and the asset gets the external ref right after. A rerun finds each CI through one of the three.

A create whose outcome is unknown (any 5xx, a lost answer, a timeout) is never sent again
blindly:
- Right after it, the category's CIs modified since shortly before it are listed: a CI with its
  name and every value it sent is its CI. Exactly one is adopted (linked, as a create); none or
  several, and the create is `held`, its journal entry kept.
- The next sync's snapshot pairs a held create with a CI of its name modified after it
  (`reconcile.match`, `recovered`) and links it: the item is settled.
- A journalled create planned again (its snapshot showed no CI to pair) is first looked up by
  its values, one listing for all of them. Exactly one CI: adopted. Several with its values, or
  CIs of its name without them: held, as only an operator can tell which is ours (a pin,
  `hector-sync link` of the asset and its CI, settles it: see `hector_sync.held`; so does writing
  the CI's id into the asset's c2 external ref). None: the create never landed, and it
  is sent once more, journalled anew, but only if that listing is taken at least SETTLE_AFTER
  after the create was first held; until then it stays held. Both instants are on our clock
  (no clock difference enters), and SETTLE_AFTER is far longer than a gateway's backend takes
  to finish a request the gateway gave up on. A journal entry that was never held comes from a
  run killed before it heard back: that lookup settles it at once, so a rerun after a kill
  finishes the creates its killed run never sent.
- A create journalled after the C2 snapshot this change set was planned on was sent by another
  writeback since: it is held, not resent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from hector_sync.c2 import C2Client, ci_holds
from hector_sync.catalog import ResolvedCategory
from hector_sync.errors import ApiError, InvalidData, NotFound, Unavailable, UnexpectedAnswer, VersionConflict
from hector_sync.hector import HectorClient
from hector_sync.http import path_of
from hector_sync.reconcile.requests import CI_ACTIONS
from hector_sync.state import SyncState
from hector_sync.writeback.base import Request, Row, Writeback, calls, items

CREATE_BATCH = 100
LOOKBACK = timedelta(minutes=10)  # clock difference between us and C2 ITSM, generously
# How long after a create was held a listing that still shows no CI of it proves it never landed.
SETTLE_AFTER = timedelta(minutes=10)


@dataclass(kw_only=True)
class C2Writeback(Writeback):
    c2: C2Client
    hector: HectorClient
    resolved: ResolvedCategory
    _assets: dict[int, tuple[list[dict[str, Any]], int]] = field(default_factory=dict)  # refs and version
    _unsent: list[int] = field(default_factory=list)
    _adopt: dict[int, str] = field(default_factory=dict)  # journalled creates found as CIs: asset → CI
    _hold: dict[int, str] = field(default_factory=dict)  # journalled creates not sent again: asset → why
    what: str = "C2 writes"

    def planned_calls(self, changes: pl.DataFrame) -> int:
        """A CI create is counted as one call (with the asset's external ref written after it)."""
        return (calls(changes, "create_ci") + calls(changes, "link_ci") + calls(changes, "unlink_ci")
                + calls(changes, *CI_ACTIONS, by="target_id"))

    def write_all(self, changes: pl.DataFrame) -> None:
        creates = list(items(changes, "create_ci"))
        self._assets = self._refs([int(asset) for asset, _ in creates])
        self._create_cis(creates)
        self.each(items(changes, "link_ci"), self._link)
        self.each(items(changes, "unlink_ci"), self._unlink)
        self.each(items(changes, *CI_ACTIONS, by="target_id"), lambda _, rows: self._update_ci(rows))
        self.record_reports(changes)

    def _refs(self, asset_ids: list[int]) -> dict[int, tuple[list[dict[str, Any]], int]]:
        """External refs and version, as Hector's snapshot holds them, of the assets CIs are
        created for: what the external ref written after each create keeps and sends."""
        if not asset_ids:
            return {}
        frame = self.store.query(
            "SELECT id, external_refs, version FROM hector_asset WHERE category_key = ? "
            "AND id IN (SELECT unnest(?::BIGINT[]))", [self.plan.key, asset_ids])
        return {i: (json.loads(refs or "[]"), version) for i, refs, version in frame.iter_rows()}

    @cached_property
    def _target_names(self) -> dict[str, str]:
        """C2 field → the target name the baseline knows it by; once per writeback, not per CI."""
        return {t.source: t.name for t in self.plan.targets}

    def _agreed_rows(self, ci_id: str, asset_id: int, rows: list[Row]) -> None:
        names = self._target_names
        self.agreed(ci_id, asset_id, {names[r["field"]]: r["new"] for r in rows if r["field"] in names})

    def _create_cis(self, creates: list[tuple[str, list[Row]]]) -> None:
        read_at = self.applying.c2_read_at  # journalled or linked after the read the plan was computed from
        journal = SyncState(self.store).journalled_creates(self.plan.key)
        sent_since = {a for a, (at, _) in journal.items() if read_at is None or at > read_at}
        done_since = self.linked_since("asset_id", [asset for asset, _ in creates], read_at)
        self._settle({int(a): rows for a, rows in creates
                      if a not in done_since and int(a) in journal and int(a) not in sent_since}, journal)
        unsent = sum(int(a) in sent_since or int(a) in self._hold or a in done_since for a, _ in creates)
        if unsent and self.calls_done is not None and self.calls_done.total is not None:
            self.calls_done.expect(self.calls_done.total - unsent)  # held: not sent in this run
        for start in range(0, len(creates), CREATE_BATCH):
            batch = []
            for asset, rows in creates[start:start + CREATE_BATCH]:
                if asset in done_since:
                    for r in rows:
                        r["target_id"] = done_since[asset]
                    self.done(rows, "already_there", f"created earlier as CI {done_since[asset]}; not sent again")
                elif int(asset) in sent_since:
                    self.done(rows, "held", "a CI create for this asset was sent after the C2 snapshot this "
                              "change set was planned on; the next sync finds that CI before creating any")
                elif int(asset) in self._hold:
                    self.done(rows, "held", self._hold[int(asset)])
                else:
                    batch.append((asset, rows))
            sending = [(int(a), Request.of(r).body["name"]) for a, r in batch if int(a) not in self._adopt]
            SyncState(self.store).record_intents(self.plan.key, sending, self.run_id)
            self.each(batch, lambda asset, rows: self._create_ci(int(asset), rows))
            self.flush()
            SyncState(self.store).drop_intents(self.plan.key, self._unsent)
            self._unsent = []

    def _settle(self, again: dict[int, list[Row]], journal: dict[int, tuple[datetime, datetime | None]]) -> None:
        """Decide, with one listing, what becomes of the journalled creates planned `again`:
        adopted (`_adopt`), held (`_hold`), or, in neither, sent once more (see the module)."""
        if not again:
            return
        ids = (self.resolved.cmdb_id, self.resolved.c2_category_id)
        bodies = {asset: Request.of(rows).body for asset, rows in again.items()}
        wanted = {asset: (body["name"], {}, journal[asset][0] - LOOKBACK) for asset, body in bodies.items()}
        named = self.c2.find_cis_holding(*ids, wanted)
        now = datetime.now(UTC)
        for asset, body in bodies.items():
            name = body["name"]
            ours = [ci for ci in named[asset] if ci_holds(ci, name, body["fields"])]
            held_since = journal[asset][1]
            if len(ours) == 1:
                self._adopt[asset] = str(ours[0]["id"])
            elif named[asset]:
                which = (f"{len(ours)} CIs with its name and values" if ours
                         else f"CIs named '{name}' whose values differ from its create's")
                listed = ", ".join(sorted(str(ci["id"]) for ci in ours or named[asset]))
                self._hold[asset] = (f"an earlier create of it may have landed: C2 ITSM lists {which} ({listed}) "
                                     "modified since; it is not created again until it is settled: pin its CI with "
                                     f"hector-sync link --category {self.plan.key} CI_ID {asset}")
            elif held_since is not None and now < held_since + SETTLE_AFTER:
                since, until = (t.astimezone(UTC) for t in (held_since, held_since + SETTLE_AFTER))
                self._hold[asset] = (f"C2 ITSM gave no certain answer to its create (held since "
                                     f"{since:%Y-%m-%d %H:%M:%S} UTC) and lists no CI with its name and values yet; "
                                     f"it is not created again before {until:%Y-%m-%d %H:%M:%S} UTC: a sync from "
                                     "then on that still finds none creates it once, and one that finds it links it")

    def _create_ci(self, asset_id: int, rows: list[Row]) -> None:
        outcome, note = "created", None
        try:
            if asset_id in self._adopt:
                ci_id = self._adopt[asset_id]
                outcome, note = "already_there", (f"an earlier create of it landed: found as CI {ci_id} by its name "
                                                  "and values; not sent again")
            else:
                ci_id, note = self._post_ci(Request.of(rows), rows)
        except (InvalidData, NotFound) as refused:
            self.done(rows, "refused", str(refused))
            with self._lock:
                self._unsent.append(asset_id)
            return
        if ci_id is None:
            return  # held
        self.link(ci_id, asset_id)
        self._agreed_rows(ci_id, asset_id, rows)
        for r in rows:
            r["target_id"] = ci_id
        if not self._put_ref(asset_id, ci_id):
            note = "; ".join(filter(None, [note, f"the asset changed meanwhile, so the next sync writes its external "
                                                 f"ref to {ci_id} from the local link"]))
        self.done(rows, outcome, note)

    def _post_ci(self, request: Request, rows: list[Row]) -> tuple[str | None, str | None]:
        """Create the CI, once: (its id, a note) when created or found; (None, None) when held.

        When the outcome is unknown (any 5xx, a lost answer, a timeout, an answer we cannot
        read), the CIs modified since shortly before the create are listed: exactly one with its
        name and every value it sent is ours; none or several, and it is held, its journal entry
        kept for the next sync (see the module). A 429 through every retry, like any other
        answer, says it was not processed: raised, the category fails, the next sync sends it."""
        ids, name = (self.resolved.cmdb_id, self.resolved.c2_category_id), request.body["name"]
        sent_at = datetime.now(UTC)
        try:
            return str(request.send(self.c2)["id"]), None
        except Unavailable as unknown:
            if unknown.status == 429:
                raise
            what = (f"answered its create {unknown.status}" if unknown.status is not None
                    else f"gave no answer to its create ({unknown.reason or 'the answer was lost'})")
        except UnexpectedAnswer as unreadable:
            what = f"answered its create with an answer that cannot be read ({unreadable})"
        hold = "it is not created again until a later read settles it: the next sync links the CI if one appears"
        try:
            found = self.c2.find_cis_named(*ids, name, sent_at - LOOKBACK, request.body["fields"])
        except ApiError as failed:
            self.done(rows, "held", f"C2 ITSM {what}, and listing its CIs to find it failed ({failed}); {hold}")
            raise
        if len(found) == 1:
            ci_id = str(found[0]["id"])
            self.log(f"{self.plan.key}: C2 ITSM {what}; found CI '{name}' as {ci_id} by its name and values")
            return ci_id, f"C2 ITSM {what}; found it as CI {ci_id} by its name and values"
        listed = f"{len(found)} CIs ({', '.join(sorted(str(ci['id']) for ci in found))})" if found else "no CI"
        settle = datetime.now(UTC) + SETTLE_AFTER  # held from now: see `_settle`
        self.done(rows, "held", f"C2 ITSM {what}, and lists {listed} with its name and values since; {hold}, "
                  f"and creates it once if a sync from {settle:%Y-%m-%d %H:%M:%S} UTC on still finds none")
        return None, None

    def _link(self, asset: str, rows: list[Row]) -> None:
        if self._ref_written(Request.of(rows)):
            self.done(rows, "linked")
            self.link(rows[0]["target_id"], int(asset))
        else:
            self.done(rows, "conflict", "the asset changed since the snapshot; the next sync links it")

    def _unlink(self, asset: str, rows: list[Row]) -> None:
        if self._ref_written(Request.of(rows)):
            self.done(rows, "unlinked")
        else:
            self.done(rows, "conflict", "the asset changed since the snapshot; the next sync removes its ref")

    def _put_ref(self, asset_id: int, ci_id: str) -> bool:
        """Give the asset the external ref to the CI just created for it, keeping its other refs."""
        refs, version = self._assets.get(asset_id, ([], 0))
        body = {"external_refs": [r for r in refs if r.get("source") != "c2"] + [{"source": "c2", "id": ci_id}]}
        return self._ref_written(Request("PATCH", path_of("assets", asset_id), body, version))

    def _ref_written(self, request: Request) -> bool:
        """Send an asset's external ref; False when the asset changed or went since the snapshot."""
        try:
            request.send(self.hector)
        except (VersionConflict, NotFound, InvalidData):
            return False
        return True

    def _update_ci(self, rows: list[Row]) -> None:
        """One PATCH per CI, whatever its rows update, revert or retire."""
        ci_id, asset_id = rows[0]["target_id"], int(rows[0]["item"])
        if self.write(rows, lambda: Request.of(rows).send(self.c2)):
            self._agreed_rows(ci_id, asset_id, [r for r in rows if r["action"] != "retire_ci"])
