"""Client of the Hector REST API (docs: docs/hector-api.md).

Hector authenticates with a bearer API key that has no refresh, so a 401 is final. Lists
page with limit/offset; writes use optimistic locking with If-Match.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from hector_sync.http import JsonApi, ModelT, call_name, header_safe, path_of, utc_z
from hector_sync.paging import Deadline, Listing, OnTotal
from hector_sync.transport import RetryPolicy

if TYPE_CHECKING:
    from hector_sync.config import HectorSettings

MAX_PAGE_SIZE = 1000


class _HectorModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class HectorStockroom(_HectorModel):
    id: int
    name: str


class HectorCategory(_HectorModel):
    id: int
    name: str
    type: Literal["serialized", "lot", "kit"]


class HectorAttribute(_HectorModel):
    id: int
    name: str
    scope: Literal["subcategory", "asset"]
    type: Literal["text", "number", "date"]


class _Rows(_HectorModel):
    """The envelope of a list page; rows stay plain dicts (models are validated by the caller)."""

    total: int
    rows: list[dict[str, Any]]


class HectorClient(JsonApi):
    """Hector over HTTP: reference lists, paged subcategory and asset reads, guarded writes."""

    system = "Hector"
    section = "hector"

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        verify_tls: bool = True,
        retry: RetryPolicy = RetryPolicy(),
        api_key_env: str | None = None,
        rate_limit_per_s: float | None = None,
        budget_beside: Path | None = None,
    ) -> None:
        """`api_key_env` names the variable holding the key, for the 401 message;
        `rate_limit_per_s` caps the calls per second of all threads together, and of every
        process sharing the DuckDB file `budget_beside` (see `JsonApi`)."""
        if not header_safe(api_key):  # requests would refuse it later, quoting "Bearer <key>"
            where = f"the environment variable {api_key_env}" if api_key_env else "the Hector API key"
            raise ValueError(
                f"{where} is not a valid HTTP header value (surrounding spaces, a control character, "
                "or a character outside Latin-1): set it to the key alone"
            )
        super().__init__(
            url, verify_tls=verify_tls, retry=retry, account=None, rate_limit_per_s=rate_limit_per_s,
            budget_beside=budget_beside,
        )
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._session.headers["Authorization"] = f"Bearer {api_key}"

    @classmethod
    def from_settings(
        cls, settings: HectorSettings, *, retry: RetryPolicy = RetryPolicy(), budget_beside: Path | None = None
    ) -> HectorClient:
        """Build from the `hector` section of the configuration (`api_key` is a Secret);
        `budget_beside` as for C2 ITSM."""
        return cls(
            settings.url,
            settings.api_key.reveal(),
            verify_tls=settings.verify_tls,
            retry=retry,
            api_key_env=getattr(settings.api_key, "env", None),
            rate_limit_per_s=settings.rate_limit_per_s,
            budget_beside=budget_beside,
        )

    def _secrets(self) -> Iterable[str]:
        return (self._api_key,)

    def _credentials_hint(self) -> str:
        if self._api_key_env:
            return f"check the key in {self._api_key_env}"
        return "check the API key in the configuration"

    def _iter_pages(
        self, path: str, params: Mapping[str, str | int], page_size: int, on_total: OnTotal | None = None,
        deadline: Deadline | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the rows of a list page by page until `total` is reached or a page is empty.

        The rows must account for every one of Hector's `total`, else `ListingIncomplete` (see
        `Listing`), raised before the bad page is yielded or once the last one was; `deadline`
        abandons the read between two pages. `on_total(items, pages)` hears the `total` of each
        answer before its page."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}")
        listing = Listing(self.system, call_name("GET", path), path.rsplit("/", 1)[-1], page_size,
                          total_name="total", deadline=deadline, on_total=on_total)
        offset = 0
        while True:
            listing.before_page()
            window = {**params, "limit": page_size, "offset": offset}
            page = self._fetch(_Rows, "GET", path, params=window)
            rows = listing.page(offset, page.rows, page.total)
            if not page.rows:
                break
            yield rows
            offset += len(page.rows)
            if offset >= page.total:
                break
        listing.end()

    def _list(self, model: type[ModelT], path: str) -> list[ModelT]:
        """A whole reference list (a few rows), each row checked against `model`."""
        call = call_name("GET", path)
        pages = self._iter_pages(path, {}, MAX_PAGE_SIZE)
        return [self._parse(model, row, call) for rows in pages for row in rows]

    def list_stockrooms(self) -> list[HectorStockroom]:
        return self._list(HectorStockroom, "/stockrooms")

    def list_categories(self) -> list[HectorCategory]:
        return self._list(HectorCategory, "/categories")

    def list_attributes(self) -> list[HectorAttribute]:
        return self._list(HectorAttribute, "/attributes")

    def iter_subcategory_pages(
        self, category_id: int, *, updated_since: datetime | None = None, page_size: int = MAX_PAGE_SIZE,
        on_total: OnTotal | None = None, deadline: Deadline | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        params: dict[str, str | int] = {"category_id": category_id}
        if updated_since is not None:
            params["updated_since"] = utc_z(updated_since)
        return self._iter_pages("/subcategories", params, page_size, on_total, deadline)

    def iter_asset_pages(
        self,
        *,
        category_id: int | None = None,
        subcategory_id: int | None = None,
        external_ref: str | None = None,
        updated_since: datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
        on_total: OnTotal | None = None,
        deadline: Deadline | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Assets page by page; `external_ref` is "source:id" (see find_assets_by_external_ref)."""
        filters = {
            "category_id": category_id,
            "subcategory_id": subcategory_id,
            "external_ref": external_ref,
            "updated_since": None if updated_since is None else utc_z(updated_since),
        }
        params = {key: value for key, value in filters.items() if value is not None}
        return self._iter_pages("/assets", params, page_size, on_total, deadline)

    def find_assets_by_external_ref(self, source: str, ref_id: str) -> list[dict[str, Any]]:
        """The assets carrying the external ref (normally none or one; more is a data problem)."""
        pages = self.iter_asset_pages(external_ref=f"{source}:{ref_id}")
        return [asset for rows in pages for asset in rows]

    def send(self, method: str, path: str, body: Mapping[str, Any], version: int | None = None) -> dict[str, Any]:
        """A write as a plan stores it: `method` and `path` as docs/hector-api.md gives them. A
        PATCH carries `If-Match: version`. Hector answers a second create of the same triple, or
        of an asset with the same external ref, with 409 duplicate and the existing id: such a
        create whose answer was lost is sent again."""
        if method == "PATCH":
            if not body:
                raise ValueError(f"an update of {path} was given nothing to change")
            return self._record("PATCH", path, body=dict(body), headers={"If-Match": str(version)})
        replay = path == "/subcategories" or bool(body.get("external_refs"))
        return self._record(method, path, body=dict(body), replay=replay)

    def create_subcategory(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.send("POST", "/subcategories", body)

    def update_subcategory(
        self, subcategory_id: int, version: int, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self.send("PATCH", path_of("subcategories", subcategory_id), changes, version)

    def create_asset(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.send("POST", "/assets", body)

    def update_asset(self, asset_id: int, version: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        return self.send("PATCH", path_of("assets", asset_id), changes, version)
