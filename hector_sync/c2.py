"""Client of the C2 ITSM REST API (docs: /work/shared/spec/c2-itsm-api.md).

C2 authenticates a service account with a password for a bearer token that can expire at any
moment, so every call logs in lazily and, on a 401, logs in once more and repeats the call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from hector_sync.errors import CredentialsRejected, NotFound, UnexpectedAnswer
from hector_sync.http import JsonApi, OnTotal, RetryPolicy, call_name, pages_of, path_of, utc_z

if TYPE_CHECKING:
    from hector_sync.config import C2Settings

MAX_PAGE_SIZE = 500

FieldType = Literal["text", "number", "date", "choice", "user"]
CiStatus = Literal["active", "retired"]


class _C2Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class C2Cmdb(_C2Model):
    id: str
    name: str


class C2Category(_C2Model):
    id: str
    name: str


class C2Field(_C2Model):
    id: str
    name: str
    type: FieldType
    required: bool


class _Cmdbs(_C2Model):
    items: list[C2Cmdb]


class _Categories(_C2Model):
    items: list[C2Category]


class _Fields(_C2Model):
    items: list[C2Field]


class _CiPage(_C2Model):
    """The envelope of a CI page; the CIs stay plain dicts because there can be a million."""

    items: list[dict[str, Any]]
    next_page: int | None
    total_count: int | None = None  # of the filtered answer (modified_since), every page


class _Login(_C2Model):
    token: str


RELOGINS = 3


class C2Client(JsonApi):
    """C2 ITSM over HTTP: discovery, paged CI reads, CI writes with optimistic locking."""

    system = "C2 ITSM"

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        verify_tls: bool = True,
        retry: RetryPolicy = RetryPolicy(),
        password_env: str | None = None,
        rate_limit_per_s: float | None = None,
    ) -> None:
        """`password_env` names the variable holding the password, for the 401 message;
        `rate_limit_per_s` caps the calls per second of all threads together (see `JsonApi`)."""
        super().__init__(
            url, verify_tls=verify_tls, retry=retry, account=username, rate_limit_per_s=rate_limit_per_s
        )
        self._password = password
        self._password_env = password_env
        self._token: str | None = None
        self._login_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: C2Settings, *, retry: RetryPolicy = RetryPolicy()) -> C2Client:
        """Build from the `c2` section of the configuration (`password` is a Secret)."""
        return cls(
            settings.url,
            settings.username,
            settings.password.reveal(),
            verify_tls=settings.verify_tls,
            retry=retry,
            password_env=getattr(settings.password, "env", None),
            rate_limit_per_s=settings.rate_limit_per_s,
        )

    def _secrets(self) -> Iterable[str]:
        return (self._password, self._token or "")

    def _credentials_hint(self) -> str:
        if self._password_env:
            return f"check the password in {self._password_env}"
        return "check the username and password in the configuration"

    def _login(self, stale: str | None) -> str:
        """Log in unless another thread already replaced the `stale` token; return the token."""
        with self._login_lock:
            if self._token is None or self._token == stale:
                body = {"username": self.account, "password": self._password}
                # a second login only issues another token: safe to resend when the answer is lost
                answer = self._request("POST", "/auth/login", body=body, replay=True)
                self._token = self._parse(_Login, answer, call_name("POST", "/auth/login")).token
            return self._token

    def _call(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """An authenticated call; a rejected token is renewed and the call repeated.

        A login that answers 401 is final: the credentials are wrong. A renewed token rejected
        again is renewed again, at most RELOGINS times: with writers in several threads, the
        others can use a short-lived token up before this call's retry is sent.
        """

        def send(token: str) -> Any:
            authorized = {**(headers or {}), "Authorization": f"Bearer {token}"}
            return self._request(method, path, headers=authorized, **kwargs)

        token = self._token or self._login(None)
        for _ in range(RELOGINS):
            try:
                return send(token)
            except CredentialsRejected:
                pass  # expired or revoked, maybe mid-pagination: outside the handler, so no chained 401
            token = self._login(token)
        return send(token)

    def list_cmdbs(self) -> list[C2Cmdb]:
        return self._fetch(_Cmdbs, "GET", "/cmdbs").items

    def list_categories(self, cmdb_id: str) -> list[C2Category]:
        return self._fetch(_Categories, "GET", path_of("cmdbs", cmdb_id, "categories")).items

    def list_fields(self, cmdb_id: str, category_id: str) -> list[C2Field]:
        path = path_of("cmdbs", cmdb_id, "categories", category_id, "fields")
        return self._fetch(_Fields, "GET", path).items

    def iter_ci_pages(
        self,
        cmdb_id: str,
        category_id: str,
        *,
        modified_since: datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
        on_total: OnTotal | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the CIs of a category page by page (retired ones included), holding one page.

        `on_total(items, pages)` hears C2's `total_count` of the answer (filtered by
        `modified_since`) and the pages it makes, before each page is yielded."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}")
        path = path_of("cmdbs", cmdb_id, "cis")
        params: dict[str, str | int] = {"category_id": category_id, "page_size": page_size}
        if modified_since is not None:
            params["modified_since"] = utc_z(modified_since)
        page: int | None = 1
        while page is not None:
            envelope = self._fetch(_CiPage, "GET", path, params={**params, "page": page})
            if on_total is not None and envelope.total_count is not None:
                on_total(envelope.total_count, pages_of(envelope.total_count, page_size))
            yield envelope.items
            if envelope.next_page is not None and envelope.next_page <= page:
                message = f"page {page} names page {envelope.next_page} as the next one"
                raise self._error(UnexpectedAnswer, call_name("GET", path), message=message)
            page = envelope.next_page

    def find_cis_named(self, cmdb_id: str, category_id: str, name: str, modified_since: datetime) -> list[dict[str, Any]]:
        """The category's CIs of that name modified since then: how a create whose answer was
        lost is found (C2 ITSM has no search by name, and no duplicate check)."""
        pages = self.iter_ci_pages(cmdb_id, category_id, modified_since=modified_since)
        return [ci for page in pages for ci in page if (ci.get("name") or "").strip() == name.strip()]

    def get_ci(self, ci_id: str) -> dict[str, Any] | None:
        """The CI, or None when C2 no longer has it."""
        try:
            return self._record("GET", path_of("cis", ci_id))
        except NotFound:
            return None

    def create_ci(
        self, cmdb_id: str, category_id: str, name: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"category_id": category_id, "name": name, "fields": dict(fields)}
        return self._record("POST", path_of("cmdbs", cmdb_id, "cis"), body=body)

    def update_ci(
        self,
        ci_id: str,
        version: int,
        *,
        name: str | None = None,
        status: CiStatus | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Apply the changes if the CI is still at `version` (else VersionConflict); a None
        value inside `fields` clears that field, a None argument leaves it alone."""
        changes = {"name": name, "status": status, "fields": None if fields is None else dict(fields)}
        body = {key: value for key, value in changes.items() if value is not None}
        if not body:
            raise ValueError(f"update_ci({ci_id!r}) was given nothing to change")
        path = path_of("cis", ci_id)
        return self._record("PATCH", path, body=body, headers={"If-Match": str(version)})
