"""An in-memory table of Hector rows sized for a million assets.

Rows are kept as their JSON bytes (a page is then a join, and a million assets take a few
hundred bytes each instead of a few kilobytes of dicts), keyed by id in a dict. Beside them:
the ids in order, one sorted id list per value of each indexed field, unique keys for the
duplicate checks, and a log of (updated_at, id) for `updated_since`. A filter on one indexed
field is an existing list (O(page)); other combinations are computed once and cached until the
next write.
"""

import json
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from .wire import json_bytes, write_stamp

Filter = tuple[tuple[str, Hashable], ...]


def _contains(ids: Sequence[int], value: int) -> bool:
    i = bisect_left(ids, value)
    return i < len(ids) and ids[i] == value


class Table:
    """Rows of one kind; `keys_of(row)` names the unique keys a row holds (e.g. its asset tag
    in its category), so that `conflict(row)` answers a duplicate check in O(1)."""

    def __init__(self, indexed: tuple[str, ...], keys_of: Callable[[dict[str, Any]], list[str]],
                 first_id: int) -> None:
        self._rows: dict[int, bytes] = {}
        self._ids: list[int] = []
        self._by: dict[str, dict[Hashable, list[int]]] = {field: {} for field in indexed}
        self._keys_of = keys_of
        self._owners: dict[str, int] = {}
        self._log_stamps = array("d")
        self._log_ids = array("q")
        self._first_id = first_id
        self._generation = 0
        self._filtered = lru_cache(maxsize=16)(self._filter)

    def __len__(self) -> int:
        return len(self._ids)

    def next_id(self) -> int:
        return self._ids[-1] + 1 if self._ids else self._first_id

    def next_stamp(self) -> int:
        """The `updated_at` (epoch s) of a write now; never before the last one, which keeps
        the `updated_since` log sorted even if the clock steps back."""
        return max(write_stamp(), int(self._log_stamps[-1]) if self._log_stamps else 0)

    def get(self, row_id: int) -> dict[str, Any] | None:
        raw = self._rows.get(row_id)
        return None if raw is None else json.loads(raw)

    def conflict(self, row: dict[str, Any]) -> int | None:
        """The id of another row already holding one of `row`'s unique keys, if any."""
        for key in self._keys_of(row):
            owner = self._owners.get(key)
            if owner is not None and owner != row["id"]:
                return owner
        return None

    def put(self, row: dict[str, Any]) -> None:
        """Insert a row with a new, higher id, or replace the row with its id; `updated_at`
        must not be older than the previous write's."""
        row_id = row["id"]
        stamp = datetime.fromisoformat(row["updated_at"]).timestamp()
        if self._log_stamps and stamp < self._log_stamps[-1]:
            raise ValueError(f"row {row_id} updated_at goes back in time")
        old = self.get(row_id)
        if old is None:
            if self._ids and row_id <= self._ids[-1]:
                raise ValueError(f"new row id {row_id} is not above {self._ids[-1]}")
            self._ids.append(row_id)
        else:
            for key in self._keys_of(old):
                del self._owners[key]
        for field, index in self._by.items():
            if old is not None and old[field] == row[field]:
                continue
            if old is not None:
                ids = index[old[field]]
                del ids[bisect_left(ids, row_id)]
            insort(index.setdefault(row[field], []), row_id)
        for key in self._keys_of(row):
            self._owners[key] = row_id
        self._rows[row_id] = json_bytes(row)
        self._log_stamps.append(stamp)
        self._log_ids.append(row_id)
        self._generation += 1

    def select(self, eq: Filter = (), key: str | None = None,
               since: float | None = None) -> Sequence[int]:
        """Ids, ascending, of rows whose indexed fields equal `eq`, that hold unique `key`, and
        whose `updated_at` is at or after `since` (each filter optional)."""
        if key is None and since is None and len(eq) <= 1:
            if not eq:
                return self._ids
            field, value = eq[0]
            return self._by[field].get(value, [])
        return self._filtered(eq, key, since, self._generation)

    def _filter(self, eq: Filter, key: str | None, since: float | None,
                _generation: int) -> list[int]:
        """`_generation` only keys the cache: any write makes earlier answers stale."""
        sources: list[Sequence[int]] = [self._by[field].get(value, []) for field, value in eq]
        if key is not None:
            owner = self._owners.get(key)
            sources.append([] if owner is None else [owner])
        if since is not None:
            sources.append(sorted(set(self._log_ids[bisect_left(self._log_stamps, since):])))
        sources.sort(key=len)
        first, rest = sources[0], sources[1:]
        return [i for i in first if all(_contains(ids, i) for ids in rest)]

    def page_bytes(self, ids: Sequence[int], offset: int, limit: int) -> bytes:
        """`{"total": N, "rows": [...]}` for a window of `ids`, assembled from stored JSON."""
        rows = b",".join(self._rows[i] for i in ids[offset:offset + limit])
        return b'{"total":%d,"rows":[%s]}' % (len(ids), rows)
