"""Client of the C2 ITSM REST API (docs: docs/c2-itsm-api.md).

C2 authenticates a service account with a password for a bearer token that can expire at any
moment, so every call logs in lazily and, on a 401, logs in once more and repeats the call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from hector_sync.errors import CredentialsRejected, NotFound, UnexpectedAnswer
from hector_sync.http import JsonApi, call_name, header_safe, path_of, utc_z
from hector_sync.paging import Deadline, Listing, OnTotal
from hector_sync.transport import RetryPolicy

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
K = TypeVar("K")


def _modified_at(ci: Mapping[str, Any]) -> datetime:
    """A CI's `modified_at` ("2026-11-21T14:02:11Z", UTC when it names no zone). Missing or
    unreadable, it counts as the latest instant: C2 ITSM listed the CI as modified since."""
    try:
        instant = datetime.fromisoformat(str(ci.get("modified_at")))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _same_value(listed: Any, sent: Any) -> bool:
    """A field value as C2 ITSM lists it against the one a create sent: absent, null and empty
    alike, numbers as numbers, text trimmed."""
    if listed in (None, "") or sent in (None, ""):
        return listed in (None, "") and sent in (None, "")
    numbers = tuple(isinstance(v, int | float) and not isinstance(v, bool) for v in (listed, sent))
    if all(numbers):
        return float(listed) == float(sent)
    if any(numbers):
        return False
    return str(listed).strip() == str(sent).strip()


def ci_holds(ci: Mapping[str, Any], name: str, fields: Mapping[str, Any]) -> bool:
    """Whether a CI, as C2 ITSM lists it, carries `name` and every value of `fields` (by field
    id, as a create sends them); fields it holds beyond those do not matter."""
    listed = ci.get("fields") or {}
    return (ci.get("name") or "").strip() == name.strip() and all(
        _same_value(listed.get(field_id), value) for field_id, value in fields.items()
    )


class C2Client(JsonApi):
    """C2 ITSM over HTTP: discovery, paged CI reads, CI writes with optimistic locking."""

    system = "C2 ITSM"
    section = "c2"

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
        budget_beside: Path | None = None,
    ) -> None:
        """`password_env` names the variable holding the password, for the 401 message;
        `rate_limit_per_s` caps the calls per second of all threads together, and of every
        process sharing the DuckDB file `budget_beside` (see `JsonApi`)."""
        super().__init__(
            url, verify_tls=verify_tls, retry=retry, account=username, rate_limit_per_s=rate_limit_per_s,
            budget_beside=budget_beside,
        )
        self._password = password
        self._password_env = password_env
        self._token: str | None = None
        self._login_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: C2Settings, *, retry: RetryPolicy = RetryPolicy(), budget_beside: Path | None = None
    ) -> C2Client:
        """Build from the `c2` section of the configuration (`password` is a Secret);
        `budget_beside`: the DuckDB file, to share the rate limit with every other run."""
        return cls(
            settings.url,
            settings.username,
            settings.password.reveal(),
            verify_tls=settings.verify_tls,
            retry=retry,
            password_env=getattr(settings.password, "env", None),
            rate_limit_per_s=settings.rate_limit_per_s,
            budget_beside=budget_beside,
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
                token = self._parse(_Login, answer, call_name("POST", "/auth/login")).token
                if not header_safe(token):  # requests would refuse it quoting it, "Bearer <token>"
                    message = "the token is not a valid HTTP header value (empty, or a control character in it)"
                    raise self._error(UnexpectedAnswer, call_name("POST", "/auth/login"), message=message)
                self._token = token
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
        deadline: Deadline | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the CIs of a category page by page (retired ones included), holding one page.

        The pages must account for every CI of C2's `total_count` (of the answer, filtered by
        `modified_since`) and follow each other, page 1, 2, 3, ..., else `ListingIncomplete`
        (see `Listing`), raised before the bad page is yielded or once the last one was;
        `deadline` abandons the read between two pages. `on_total(items, pages)` hears the
        total and the pages it makes before each page is yielded."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}")
        path = path_of("cmdbs", cmdb_id, "cis")
        call = call_name("GET", path)
        params: dict[str, str | int] = {"category_id": category_id, "page_size": page_size}
        if modified_since is not None:
            params["modified_since"] = utc_z(modified_since)
        listing = Listing(self.system, call, "CIs", page_size, total_name="total_count", account=self.account,
                          deadline=deadline, on_total=on_total)
        page: int | None = 1
        while page is not None:
            listing.before_page()
            envelope = self._fetch(_CiPage, "GET", path, params={**params, "page": page})
            if envelope.next_page is not None and envelope.next_page <= page:
                message = f"page {page} names page {envelope.next_page} as the next one"
                raise self._error(UnexpectedAnswer, call, message=message)
            if envelope.next_page is not None and envelope.next_page > page + 1:
                raise listing.fault(f"skipped {envelope.next_page - page - 1:,} page(s) of {listing.noun}",
                                    f"page {page} names page {envelope.next_page} as the next one")
            yield listing.page((page - 1) * page_size, envelope.items, envelope.total_count)
            page = envelope.next_page
        listing.end()

    def find_cis_named(
        self, cmdb_id: str, category_id: str, name: str, modified_since: datetime,
        fields: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The category's CIs of that name modified since then, and, given the `fields` a create
        sent, holding those values too (`ci_holds`): how a create whose outcome is unknown is
        found (C2 ITSM has no search, and no duplicate check)."""
        wanted = {0: (name, fields or {}, modified_since)}
        return self.find_cis_holding(cmdb_id, category_id, wanted)[0]

    def find_cis_holding(
        self, cmdb_id: str, category_id: str, wanted: Mapping[K, tuple[str, Mapping[str, Any], datetime]]
    ) -> dict[K, list[dict[str, Any]]]:
        """Per key of `wanted` (name, fields by id as a create sends them, since when), the
        category's CIs modified at or after that instant that carry the name and the values.

        One listing serves them all: the CIs modified since the earliest instant, in one pass
        holding one page. An instant is compared with C2's own `modified_at`, so give it room
        for the clock difference between us and C2 ITSM."""
        found: dict[K, list[dict[str, Any]]] = {key: [] for key in wanted}
        if not wanted:
            return found
        by_name: dict[str, list[K]] = {}
        for key, (name, _, _) in wanted.items():
            by_name.setdefault(name.strip(), []).append(key)
        earliest = min(since for _, _, since in wanted.values())
        for page in self.iter_ci_pages(cmdb_id, category_id, modified_since=earliest):
            for ci in page:
                for key in by_name.get((ci.get("name") or "").strip(), ()):
                    name, fields, since = wanted[key]
                    if _modified_at(ci) >= since and ci_holds(ci, name, fields):
                        found[key].append(ci)
        return found

    def get_ci(self, ci_id: str) -> dict[str, Any] | None:
        """The CI, or None when C2 no longer has it."""
        try:
            return self._record("GET", path_of("cis", ci_id))
        except NotFound:
            return None

    def create_ci(
        self, cmdb_id: str, category_id: str, name: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a CI, sending it once: C2 ITSM keeps no duplicate check, so only an answer
        that says the create was not processed (a 429, a 401 renewed) is followed by another.
        Any 5xx, a lost answer and a timeout raise Unavailable (`status` the 5xx, or None): the
        CI may exist, and the caller finds it by its values (`find_cis_holding`) or holds it."""
        body = {"category_id": category_id, "name": name, "fields": dict(fields)}
        return self.send("POST", path_of("cmdbs", cmdb_id, "cis"), body)

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
        return self.send("PATCH", path_of("cis", ci_id), body, version)

    def send(self, method: str, path: str, body: Mapping[str, Any], version: int | None = None) -> dict[str, Any]:
        """A write as a plan stores it: `method` and `path` as docs/c2-itsm-api.md gives them. A
        PATCH carries `If-Match: version`; a create is sent once (see `create_ci`)."""
        if method == "PATCH":
            return self._record("PATCH", path, body=dict(body), headers={"If-Match": str(version)})
        return self._record(method, path, body=dict(body), once=True)
