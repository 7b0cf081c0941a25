"""The C2 ITSM simulator: docs/c2-itsm-api.md served over real HTTP.

Choices where the contract is silent:
- PATCH without If-Match is 428 `precondition_required`; an If-Match that is not a number is 400.
- `category_id` on the CI list is optional: without it the whole CMDB is listed, still by id.
  An unknown CMDB, or a category not in that CMDB, is 404. `page_size` defaults to 100.
- Wrong credentials at login are 401 `invalid_credentials`; a missing or unknown token is 401
  `unauthorized`, a known token past its life 401 `token_expired`.
- A body that is not a JSON object is 400; keys other than the contract's, a bad name or status,
  and bad field values are all 422 `invalid_field` with one `details` entry per problem.
- Writes stamp `modified_at` with the current second rounded up, so `modified_since` set to any
  instant before a write finds it.
"""

import math
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response

from hector_sync.demo import (
    DEMO_C2_PASSWORD, DEMO_C2_READONLY_PASSWORD, DEMO_C2_READONLY_USERNAME, DEMO_C2_USERNAME,
)

from .faults import ADMIN_PREFIX, C2Faults, SimControl, install_sim
from .sample_data import CMDBS, CategorySpec, SampleData, iso_utc
from .wire import (
    API, SimError, check_version, date_problem, install_error_handlers, invalid, json_response,
    parse_if_match, parse_instant, read_object, write_stamp,
)

#: username → (password, may write)
ACCOUNTS: dict[str, tuple[str, bool]] = {
    DEMO_C2_USERNAME: (DEMO_C2_PASSWORD, True),
    DEMO_C2_READONLY_USERNAME: (DEMO_C2_READONLY_PASSWORD, False),
}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_MAX_TOKENS = 10_000


@dataclass
class Token:
    username: str
    can_write: bool
    expires_at: float
    calls: int = 0
    expired: bool = False


class Tokens:
    """Issued bearer tokens; old ones are forgotten beyond a bound so logins cannot leak memory."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}

    def issue(self, username: str, can_write: bool, ttl_s: int) -> str:
        token = secrets.token_urlsafe(24)
        self._tokens[token] = Token(username, can_write, time.monotonic() + ttl_s)
        if len(self._tokens) > _MAX_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        return token

    def check(self, authorization: str | None, expire_every: int | None) -> Token:
        scheme, _, value = (authorization or "").partition(" ")
        token = self._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise SimError(401, "unauthorized", "a valid Bearer token is required")
        token.calls += 1
        if expire_every is not None and token.calls > expire_every:
            token.expired = True
        if token.expired or time.monotonic() >= token.expires_at:
            raise SimError(401, "token_expired", "the token has expired; log in again")
        return token

    def expire_all(self) -> int:
        for token in self._tokens.values():
            token.expired = True
        return len(self._tokens)


class CiStore:
    """Generated CIs plus the ones written through the API; only the latter live in memory."""

    def __init__(self, data: SampleData) -> None:
        self.data = data
        # per category: index → (modified_at in epoch s, CI) of each CI written through the API
        self._written: dict[str, dict[int, tuple[int, dict[str, Any]]]] = {
            c.name: {} for c in data.categories}
        self._writes: dict[str, int] = {c.name: 0 for c in data.categories}
        self._counts: dict[str, int] = dict(data.sizes)
        self._generated_since = lru_cache(maxsize=8)(data.indexes_modified_since)
        self._merged_since = lru_cache(maxsize=8)(self._merge_since)

    def count(self, spec: CategorySpec) -> int:
        """CIs in the category: generated plus created."""
        return self._counts[spec.name]

    def get(self, ci: str) -> dict[str, Any] | None:
        parsed = self.data.parse_ci_id(ci)
        if parsed is None or parsed[1] >= self.count(parsed[0]):
            return None
        return self.at(*parsed)

    def at(self, spec: CategorySpec, index: int) -> dict[str, Any]:
        written = self._written[spec.name].get(index)
        return written[1] if written is not None else self.data.ci_at(spec.name, index)

    def indexes(self, spec: CategorySpec, since: float | None) -> Sequence[int]:
        """Indexes of the category's CIs modified at or after `since`, ascending; a `range` when
        there is no filter, a list computed once per (category, since, writes) otherwise."""
        if since is None:
            return range(self.count(spec))
        return self._merged_since(spec.name, since, self._writes[spec.name])

    def _merge_since(self, category_name: str, since: float, _writes: int) -> Sequence[int]:
        """`_writes` is only part of the cache key: a write makes earlier results stale."""
        generated = self._generated_since(category_name, since)
        written = self._written[category_name]
        if not written:
            return generated
        kept = [i for i in generated if i not in written]
        return sorted(kept + [i for i, (stamp, _) in written.items() if stamp >= since])

    def page(self, parts: list[tuple[CategorySpec, Sequence[int]]], start: int,
             stop: int) -> list[dict[str, Any]]:
        """CIs at positions [start, stop) of the categories' index lists laid end to end."""
        return [self.at(spec, i) for spec, i in _window(parts, start, stop)]

    def save(self, ci: dict[str, Any], spec: CategorySpec, index: int, stamp: int) -> None:
        self._written[spec.name][index] = (stamp, ci)
        self._writes[spec.name] += 1

    def create(self, spec: CategorySpec, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        index = self._counts[spec.name]
        if index >= 10**spec.index_digits:
            raise SimError(507, "insufficient_storage", f"category {spec.id} is full")
        self._counts[spec.name] += 1
        stamp = write_stamp()
        ci = {"id": spec.ci_id(index), "cmdb_id": spec.cmdb_id, "category_id": spec.id,
              "name": name, "status": "active",
              "fields": {k: v for k, v in fields.items() if v is not None},
              "modified_at": iso_utc(stamp), "version": 1}
        self.save(ci, spec, index, stamp)
        return ci

    def update(self, ci: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        parsed = self.data.parse_ci_id(ci["id"])
        assert parsed is not None, "every stored CI has one of our ids"
        spec, index = parsed
        fields = dict(ci["fields"])
        for key, value in changes.get("fields", {}).items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        stamp = write_stamp()
        updated = {**ci, **{k: changes[k] for k in ("name", "status") if k in changes},
                   "fields": fields, "modified_at": iso_utc(stamp), "version": ci["version"] + 1}
        self.save(updated, spec, index, stamp)
        return updated


def _window(parts: list[tuple[CategorySpec, Sequence[int]]], start: int,
            stop: int) -> Iterator[tuple[CategorySpec, int]]:
    for spec, indexes in parts:
        n = len(indexes)
        if start < n and stop > 0:
            for i in indexes[max(start, 0):min(stop, n)]:
                yield spec, i
        start, stop = start - n, stop - n


def field_problems(spec: CategorySpec, fields: object,
                   retyped: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """What is wrong with a `fields` object for this category: unknown ids, wrong types
    (`retyped`: field id → the type an administrator has changed it to since)."""
    if not isinstance(fields, dict):
        return [{"field": "fields", "reason": "must be an object keyed by field id"}]
    types = {f.id: (retyped or {}).get(f.id, f.type) for f in spec.fields}
    problems = []
    for key, value in fields.items():
        kind = types.get(key)
        if kind is None:
            reason: str | None = f"unknown field in category {spec.id}"
        elif value is None:
            reason = None
        elif kind in ("text", "choice"):
            reason = None if isinstance(value, str) else f"a {kind} field takes a string"
        elif kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            reason = None if ok and math.isfinite(value) else "a number field takes a JSON number"
        elif kind == "date":
            reason = date_problem(value)
        else:
            ok = isinstance(value, str) and _EMAIL.fullmatch(value) is not None
            reason = None if ok else "a user field takes an e-mail address"
        if reason:
            problems.append({"field": key, "reason": reason})
    return problems


def _body_problems(body: dict[str, Any], allowed: set[str], spec: CategorySpec,
                   retyped: Mapping[str, str]) -> list[dict[str, str]]:
    problems = [{"field": k, "reason": "unknown field"} for k in body if k not in allowed]
    if "name" in body and not (isinstance(body["name"], str) and body["name"].strip()):
        problems.append({"field": "name", "reason": "must be a non-empty string"})
    if "status" in body and body["status"] not in ("active", "retired"):
        problems.append({"field": "status", "reason": 'must be "active" or "retired"'})
    return problems + field_problems(spec, body.get("fields", {}), retyped)


class C2State:
    """Everything one C2 simulator knows: data, written CIs, tokens, faults and statistics."""

    def __init__(self, data: SampleData) -> None:
        self.data = data
        self.cis = CiStore(data)
        self.tokens = Tokens()
        self.control: SimControl[C2Faults] = SimControl(C2Faults(), data.seed)
        # What an administrator changed in C2 since: CMDB or category id → name, field id → name
        # or type.
        self.renamed: dict[str, str] = {}
        self.renamed_fields: dict[str, str] = {}
        self.retyped: dict[str, str] = {}


def _cmdb_categories(data: SampleData, cmdb_id: str) -> list[CategorySpec]:
    if cmdb_id not in dict(CMDBS):
        raise SimError(404, "not_found", f"no CMDB {cmdb_id}")
    return [c for c in data.categories if c.cmdb_id == cmdb_id]


def _category(data: SampleData, cmdb_id: str, category_id: str) -> CategorySpec:
    spec = data.categories_by_id.get(category_id)
    if spec is None or spec not in _cmdb_categories(data, cmdb_id):
        raise SimError(404, "not_found", f"no category {category_id} in CMDB {cmdb_id}")
    return spec


def create_c2_app(state: C2State) -> FastAPI:
    """The C2 ITSM API under /api/v1, plus /_sim admin endpoints."""
    app = FastAPI(title="C2 ITSM simulator", openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    # async dependencies run on the event loop, not in FastAPI's thread pool: no locks needed
    async def caller(request: Request) -> Token:
        return state.tokens.check(request.headers.get("authorization"),
                                  state.control.faults.token_expire_every)

    async def writer(token: Token = Depends(caller)) -> Token:
        if not token.can_write:
            raise SimError(403, "forbidden", f"{token.username} may not write")
        return token

    reader, write = [Depends(caller)], [Depends(writer)]

    @app.post(API + "/auth/login")
    async def login(request: Request) -> Response:
        body = await read_object(request)
        username, password = body.get("username"), body.get("password")
        account = ACCOUNTS.get(username) if isinstance(username, str) else None
        if account is None or account[0] != password:
            raise SimError(401, "invalid_credentials", "wrong username or password")
        ttl = state.control.faults.token_ttl_s
        return json_response({"token": state.tokens.issue(username, account[1], ttl),
                              "expires_in": ttl})

    @app.get(API + "/cmdbs", dependencies=reader)
    async def cmdbs() -> Response:
        return json_response({"items": [{"id": i, "name": state.renamed.get(i, n)} for i, n in CMDBS]})

    @app.get(API + "/cmdbs/{cmdb_id}/categories", dependencies=reader)
    async def categories(cmdb_id: str) -> Response:
        return json_response({"items": [{"id": c.id, "name": state.renamed.get(c.id, c.name)}
                                        for c in _cmdb_categories(state.data, cmdb_id)]})

    @app.get(API + "/cmdbs/{cmdb_id}/categories/{category_id}/fields", dependencies=reader)
    async def fields(cmdb_id: str, category_id: str) -> Response:
        spec = _category(state.data, cmdb_id, category_id)
        return json_response({"items": [{"id": f.id, "name": state.renamed_fields.get(f.id, f.name),
                                         "type": state.retyped.get(f.id, f.type), "required": f.required}
                                        for f in spec.fields]})

    @app.get(API + "/cmdbs/{cmdb_id}/cis", dependencies=reader)
    async def list_cis(cmdb_id: str, category_id: str | None = None,
                       modified_since: str | None = None, page: int = Query(1, ge=1),
                       page_size: int = Query(100, ge=1, le=500)) -> Response:
        specs = ([_category(state.data, cmdb_id, category_id)] if category_id is not None
                 else _cmdb_categories(state.data, cmdb_id))
        since = None if modified_since is None else parse_instant(modified_since,
                                                                  "modified_since")
        hidden = state.control.faults.empty_categories
        parts = [(spec, state.cis.indexes(spec, since)) for spec in specs if spec.id not in hidden]
        total = sum(len(indexes) for _, indexes in parts)
        # the listing_* fault switches pick the window; without them it is this page's
        start, stop, more = state.control.faults.listing_window(total, (page - 1) * page_size,
                                                                page_size)
        items = state.cis.page(parts, start, stop)
        return json_response({"items": items, "page": page, "page_size": page_size,
                              "total_count": total, "next_page": page + 1 if more else None})

    @app.post(API + "/cmdbs/{cmdb_id}/cis", dependencies=write)
    async def create_ci(cmdb_id: str, request: Request) -> Response:
        body = await read_object(request)
        category_id = body.get("category_id")
        spec = state.data.categories_by_id.get(category_id) if isinstance(category_id, str) else None
        if spec is None or spec not in _cmdb_categories(state.data, cmdb_id):
            raise invalid([{"field": "category_id", "reason": f"no such category in {cmdb_id}"}])
        problems = _body_problems(body, {"category_id", "name", "fields"}, spec, state.retyped)
        if "name" not in body:
            problems.insert(0, {"field": "name", "reason": "required"})
        if problems:
            raise invalid(problems)
        return json_response(state.cis.create(spec, body["name"], body.get("fields", {})), 201)

    def existing(ci: str) -> dict[str, Any]:
        found = state.cis.get(ci)
        if found is None:
            raise SimError(404, "not_found", f"no CI {ci}")
        return found

    @app.get(API + "/cis/{ci}", dependencies=reader)
    async def get_ci(ci: str) -> Response:
        return json_response(existing(ci))

    @app.patch(API + "/cis/{ci}", dependencies=write)
    async def patch_ci(ci: str, request: Request) -> Response:
        current = existing(ci)
        check_version(current["version"], parse_if_match(request.headers.get("if-match")), ci)
        body = await read_object(request)
        spec = state.data.categories_by_id[current["category_id"]]
        problems = _body_problems(body, {"name", "status", "fields"}, spec, state.retyped)
        if problems:
            raise invalid(problems)
        return json_response(state.cis.update(current, body))

    @app.post(ADMIN_PREFIX + "/expire-tokens")
    async def expire_tokens() -> Response:
        return json_response({"expired": state.tokens.expire_all()})

    @app.patch(ADMIN_PREFIX + "/cmdbs/{cmdb_id}")
    async def rename_cmdb(cmdb_id: str, request: Request) -> Response:
        """An administrator renames a CMDB in C2 (its id stays)."""
        if cmdb_id not in dict(CMDBS):
            raise SimError(404, "not_found", f"no CMDB {cmdb_id}")
        state.renamed[cmdb_id] = str((await read_object(request))["name"])
        return json_response({"id": cmdb_id, "name": state.renamed[cmdb_id]})

    @app.patch(ADMIN_PREFIX + "/categories/{category_id}")
    async def rename_category(category_id: str, request: Request) -> Response:
        """An administrator renames a category in C2 (its id stays)."""
        if category_id not in state.data.categories_by_id:
            raise SimError(404, "not_found", f"no category {category_id}")
        state.renamed[category_id] = str((await read_object(request))["name"])
        return json_response({"id": category_id, "name": state.renamed[category_id]})

    @app.patch(ADMIN_PREFIX + "/fields/{field_id}")
    async def change_field(field_id: str, request: Request) -> Response:
        """An administrator renames a field (`name`; its id stays, and so do the values, which
        CIs key by id) or changes its type (`type`; values already stored stay as they were)."""
        body = await read_object(request)
        name, kind = body.get("name"), body.get("type")
        problems = []
        if "name" in body and not (isinstance(name, str) and name.strip()):
            problems.append({"field": "name", "reason": "must be a non-empty string"})
        if "type" in body and kind not in ("text", "number", "date", "choice", "user"):
            problems.append({"field": "type", "reason": "text, number, date, choice or user"})
        if not {"name", "type"} & set(body):
            problems.append({"field": "type", "reason": "send a name, a type or both"})
        if problems:
            raise invalid(problems)
        if isinstance(name, str):
            state.renamed_fields[field_id] = name
        if isinstance(kind, str):
            state.retyped[field_id] = kind
        return json_response({"id": field_id, **{k: body[k] for k in ("name", "type") if k in body}})

    install_sim(app, state.control)
    return app
