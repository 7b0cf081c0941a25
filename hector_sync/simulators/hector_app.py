"""The Hector simulator: docs/hector-api.md served over real HTTP.

Choices where the contract is silent:
- A body that is not a JSON object is 400. Unknown keys, wrong types, empty required strings
  (whitespace-only counts as empty), malformed dates, unknown or wrongly scoped attributes, a
  subcategory or stockroom that does not exist: 422 `invalid_field`, one `details` entry each.
- `id`, `updated_at` and `version` are read-only (422 when sent); so is a subcategory's
  `category_id`. An asset's `category_id` may be sent but must match its subcategory's.
- PATCH `attributes` is merged into the current ones (null removes one), like JSON Merge
  Patch; `external_refs`, when sent, replaces the list. PATCH without If-Match is 428.
- Asset tags are compared exactly (after trimming), within the asset's category; external refs
  by (source, id). The `external_ref` filter is `source:id`, split at the first colon; a value
  without a colon is 400. Filters on unknown ids simply match nothing.
- `updated_at` is the current second rounded up (see wire.write_stamp).
"""

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from hector_sync.demo import DEMO_HECTOR_API_KEY

from .faults import ADMIN_PREFIX, HectorFaults, SimControl, install_sim
from .sample_data import FIRST_ASSET_ID, FIRST_SUBCATEGORY_ID, SampleData, iso_utc
from .table import Filter, Table
from .wire import (
    API, IsoDate, SimError, check_version, date_problem, install_error_handlers, invalid,
    json_response, parse_if_match, parse_instant, read_object, validation_details,
)

READ_ONLY = ("id", "updated_at", "version")


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonBlank = Annotated[str, AfterValidator(_non_blank)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SubcategoryBody(_Body):
    category_id: int
    maker: NonBlank
    model: NonBlank
    description: NonBlank
    note: str | None = None
    price: float | None = None
    weight: float | None = None
    vendor_sku: str | None = None
    attributes: dict[str, Any] = {}


class ExternalRef(_Body):
    source: NonBlank
    id: NonBlank


class AssetBody(_Body):
    category_id: int | None = None
    subcategory_id: int
    stockroom_id: int
    title: NonBlank
    asset_tag: str | None = None
    note: str | None = None
    acquisition_date: IsoDate | None = None
    assigned_date: IsoDate | None = None
    return_date: IsoDate | None = None
    maintenance_date: IsoDate | None = None
    end_of_life_date: IsoDate | None = None
    status: Literal["in_stock", "assigned", "retired"] = "in_stock"
    attributes: dict[str, Any] = {}
    external_refs: list[ExternalRef] = []


def _norm(text: str) -> str:
    return text.strip().casefold()


def subcategory_keys(row: dict[str, Any]) -> list[str]:
    """A category holds one subcategory per maker/model/description, trimmed, any case."""
    return ["\x1f".join((str(row["category_id"]), _norm(row["maker"]), _norm(row["model"]),
                         _norm(row["description"])))]


def ref_key(source: str, ref_id: str) -> str:
    return f"ref\x1f{source}\x1f{ref_id}"


def asset_keys(row: dict[str, Any]) -> list[str]:
    """An asset tag is unique in its category; an external ref belongs to one asset."""
    keys = [ref_key(r["source"], r["id"]) for r in row["external_refs"]]
    tag = (row["asset_tag"] or "").strip()
    return keys + ([f"tag\x1f{row['category_id']}\x1f{tag}"] if tag else [])


class HectorState:
    """Everything one Hector simulator knows: reference data, tables, faults and statistics."""

    def __init__(self, data: SampleData) -> None:
        seed = data.hector_seed()
        self.api_key = DEMO_HECTOR_API_KEY
        self.stockrooms = seed.stockrooms
        self.categories = seed.categories
        self.attributes = seed.attributes
        self.subcategories = Table(("category_id",), subcategory_keys, FIRST_SUBCATEGORY_ID)
        self.assets = Table(("category_id", "subcategory_id"), asset_keys, FIRST_ASSET_ID)
        for row in seed.subcategories:
            self.subcategories.put(row)
        for row in seed.assets:
            self.assets.put(row)
        self.control: SimControl[HectorFaults] = SimControl(HectorFaults(), data.seed)

    def attribute_problems(self, attributes: dict[str, Any], scope: str) -> list[dict[str, str]]:
        """Attributes must be defined with this scope, and values must fit their type."""
        defined = {a["name"]: a for a in self.attributes}
        problems = []
        for name, value in attributes.items():
            attribute = defined.get(name)
            if attribute is None or attribute["scope"] != scope:
                reason: str | None = f"no attribute {name!r} with scope {scope}"
            elif value is None:
                reason = None
            elif attribute["type"] == "date":
                reason = date_problem(value)
            elif attribute["type"] == "number":
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                reason = None if ok else "takes a number"
            else:
                reason = None if isinstance(value, str) else "takes a string"
            if reason:
                problems.append({"field": f"attributes.{name}", "reason": reason})
        return problems


def _validated(model: type[_Body], body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`body` as the model normalises it; 422 naming every problem of shape and type. `changes`
    is what the caller sent (the body itself, or a PATCH merged into `body`)."""
    problems = [{"field": k, "reason": "read-only"} for k in READ_ONLY if k in changes]
    try:
        fields = model.model_validate({k: v for k, v in body.items()
                                       if k not in READ_ONLY}).model_dump()
    except ValidationError as exc:
        problems += validation_details(exc)
    if problems:
        raise invalid(problems)
    return fields


def _merged(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """PATCH semantics: keys replace, `attributes` merges with null removing one."""
    merged = {k: v for k, v in current.items() if k not in READ_ONLY}
    merged.update(changes)
    if isinstance(changes.get("attributes"), dict):
        merged["attributes"] = {**current["attributes"], **changes["attributes"]}
    return merged


def _save(table: Table, row_id: int, fields: dict[str, Any], version: int,
          what: str) -> dict[str, Any]:
    """Stamp and store a validated row, unless another row already holds one of its keys."""
    row = {"id": row_id, **fields, "updated_at": iso_utc(table.next_stamp()), "version": version}
    row["attributes"] = {k: v for k, v in row["attributes"].items() if v is not None}
    owner = table.conflict(row)
    if owner is not None:
        raise SimError(409, "duplicate", f"{what} already exists as {owner}", existing_id=owner)
    table.put(row)
    return row


def _page(rows: list[dict[str, Any]], offset: int, limit: int) -> Response:
    return json_response({"total": len(rows), "rows": rows[offset:offset + limit]})


def _raw(content: bytes) -> Response:
    return Response(content, media_type="application/json")


def create_hector_app(state: HectorState) -> FastAPI:
    """The Hector API under /api/v1, plus /_sim admin endpoints."""
    app = FastAPI(title="Hector simulator", openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    async def authorised(request: Request) -> None:
        scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
        if state.control.faults.revoked or scheme.lower() != "bearer" or key != state.api_key:
            raise SimError(401, "unauthorized", "the API key is wrong, expired or revoked")

    auth = [Depends(authorised)]
    Limit = Annotated[int, Query(ge=1, le=1000)]
    Offset = Annotated[int, Query(ge=0)]

    @app.get(API + "/stockrooms", dependencies=auth)
    async def stockrooms(limit: Limit = 100, offset: Offset = 0) -> Response:
        return _page(state.stockrooms, offset, limit)

    @app.get(API + "/categories", dependencies=auth)
    async def categories(limit: Limit = 100, offset: Offset = 0) -> Response:
        return _page(state.categories, offset, limit)

    @app.get(API + "/attributes", dependencies=auth)
    async def attributes(limit: Limit = 100, offset: Offset = 0) -> Response:
        return _page(state.attributes, offset, limit)

    def since(value: str | None) -> float | None:
        return None if value is None else parse_instant(value, "updated_since")

    def listed(name: Literal["subcategories", "assets"], table: Table, ids: Sequence[int], offset: int,
               limit: int) -> Response:
        """The window of `ids` at `offset`, through the listing_* fault switches if they apply."""
        faults = state.control.faults
        if not (faults.listing_faulty and name in faults.listing_lists):
            return _raw(table.page_bytes(ids, offset, limit))
        start, stop, _ = faults.listing_window(len(ids), offset, limit)
        return json_response({"total": len(ids), "rows": [table.get(i) for i in ids[start:stop]]})

    @app.get(API + "/subcategories", dependencies=auth)
    async def list_subcategories(category_id: int | None = None,
                                 updated_since: str | None = None,
                                 limit: Limit = 100, offset: Offset = 0) -> Response:
        eq: Filter = () if category_id is None else (("category_id", category_id),)
        ids = state.subcategories.select(eq, since=since(updated_since))
        return listed("subcategories", state.subcategories, ids, offset, limit)

    @app.get(API + "/assets", dependencies=auth)
    async def list_assets(category_id: int | None = None, subcategory_id: int | None = None,
                          external_ref: str | None = None, updated_since: str | None = None,
                          limit: Limit = 100, offset: Offset = 0) -> Response:
        eq: Filter = tuple((f, v) for f, v in (("category_id", category_id),
                                               ("subcategory_id", subcategory_id))
                           if v is not None)
        key = None
        if external_ref is not None:
            source, colon, ref_id = external_ref.partition(":")
            if not colon:
                raise SimError(400, "bad_request", "external_ref is source:id, e.g. c2:ci-1")
            key = ref_key(source, ref_id)
        ids = state.assets.select(eq, key, since(updated_since))
        return listed("assets", state.assets, ids, offset, limit)

    def save_subcategory(row_id: int, fields: dict[str, Any], version: int,
                         problems: list[dict[str, str]]) -> dict[str, Any]:
        if not any(c["id"] == fields["category_id"] for c in state.categories):
            problems.append({"field": "category_id", "reason": "no such category"})
        problems += state.attribute_problems(fields["attributes"], "subcategory")
        if problems:
            raise invalid(problems)
        return _save(state.subcategories, row_id, fields, version,
                     "a subcategory with this maker, model and description")

    @app.post(API + "/subcategories", dependencies=auth)
    async def create_subcategory(request: Request) -> Response:
        body = await read_object(request)
        fields = _validated(SubcategoryBody, body, body)
        return json_response(save_subcategory(state.subcategories.next_id(), fields, 1, []), 201)

    @app.patch(API + "/subcategories/{row_id}", dependencies=auth)
    async def patch_subcategory(row_id: int, request: Request) -> Response:
        current = existing(state.subcategories, row_id, "subcategory", request)
        changes = await read_object(request)
        fields = _validated(SubcategoryBody, _merged(current, changes), changes)
        moved = fields["category_id"] != current["category_id"]
        problems = [{"field": "category_id", "reason": "cannot be changed"}] if moved else []
        return json_response(save_subcategory(row_id, fields, current["version"] + 1, problems))

    def save_asset(row_id: int, fields: dict[str, Any], version: int) -> dict[str, Any]:
        problems = state.attribute_problems(fields["attributes"], "asset")
        subcategory = state.subcategories.get(fields["subcategory_id"])
        if subcategory is None:
            problems.append({"field": "subcategory_id", "reason": "no such subcategory"})
        elif fields["category_id"] not in (None, subcategory["category_id"]):
            problems.append({"field": "category_id",
                             "reason": "differs from the subcategory's category"})
        if not any(s["id"] == fields["stockroom_id"] for s in state.stockrooms):
            problems.append({"field": "stockroom_id", "reason": "no such stockroom"})
        refs = [(r["source"], r["id"]) for r in fields["external_refs"]]
        if len(set(refs)) != len(refs):
            problems.append({"field": "external_refs", "reason": "lists a reference twice"})
        if problems:
            raise invalid(problems)
        assert subcategory is not None
        return _save(state.assets, row_id, {**fields, "category_id": subcategory["category_id"]},
                     version, "an asset with this tag or external ref")

    @app.post(API + "/assets", dependencies=auth)
    async def create_asset(request: Request) -> Response:
        body = await read_object(request)
        fields = _validated(AssetBody, body, body)
        return json_response(save_asset(state.assets.next_id(), fields, 1), 201)

    @app.patch(API + "/assets/{row_id}", dependencies=auth)
    async def patch_asset(row_id: int, request: Request) -> Response:
        current = existing(state.assets, row_id, "asset", request)
        changes = await read_object(request)
        # the category follows the (possibly new) subcategory unless the caller states one
        base = {k: v for k, v in current.items() if k != "category_id"}
        fields = _validated(AssetBody, _merged(base, changes), changes)
        return json_response(save_asset(row_id, fields, current["version"] + 1))

    def existing(table: Table, row_id: int, what: str, request: Request) -> dict[str, Any]:
        row = table.get(row_id)
        if row is None:
            raise SimError(404, "not_found", f"no {what} {row_id}")
        check_version(row["version"], parse_if_match(request.headers.get("if-match")),
                      f"{what} {row_id}")
        return row

    @app.delete(ADMIN_PREFIX + "/attributes/{attribute_id}")
    async def delete_attribute(attribute_id: int) -> Response:
        """An administrator deletes an attribute: it leaves the list; values stay on the rows."""
        kept = [a for a in state.attributes if a["id"] != attribute_id]
        if len(kept) == len(state.attributes):
            raise SimError(404, "not_found", f"no attribute {attribute_id}")
        state.attributes = kept
        return json_response({"deleted": attribute_id})

    def new_name(body: dict[str, Any]) -> str:
        name = body.get("name")
        if not (isinstance(name, str) and name.strip()):
            raise invalid([{"field": "name", "reason": "must be a non-empty string"}])
        return name

    @app.patch(ADMIN_PREFIX + "/categories/{category_id}")
    async def rename_category(category_id: int, request: Request) -> Response:
        """An administrator renames a category (its id, subcategories and assets stay)."""
        name = new_name(await read_object(request))
        found = next((c for c in state.categories if c["id"] == category_id), None)
        if found is None:
            raise SimError(404, "not_found", f"no category {category_id}")
        state.categories = [{**c, "name": name} if c is found else c for c in state.categories]
        return json_response({**found, "name": name})

    @app.patch(ADMIN_PREFIX + "/attributes/{attribute_id}")
    async def rename_attribute(attribute_id: int, request: Request) -> Response:
        """An administrator renames an attribute: the rows holding a value of it show that value
        under the new name from then on (a new `updated_at`, the same `version`)."""
        name = new_name(await read_object(request))
        found = next((a for a in state.attributes if a["id"] == attribute_id), None)
        if found is None:
            raise SimError(404, "not_found", f"no attribute {attribute_id}")
        if any(a["name"] == name and a is not found for a in state.attributes):
            raise invalid([{"field": "name", "reason": f"another attribute is named {name!r}"}])
        state.attributes = [{**a, "name": name} if a is found else a for a in state.attributes]
        table = state.assets if found["scope"] == "asset" else state.subcategories
        for row_id in list(table.select()):
            row = table.get(row_id)
            if row is not None and found["name"] in row["attributes"]:
                attributes = {name if k == found["name"] else k: v for k, v in row["attributes"].items()}
                table.put({**row, "attributes": attributes, "updated_at": iso_utc(table.next_stamp())})
        return json_response({**found, "name": name})

    install_sim(app, state.control)
    return app

