"""The JSON API client the C2 ITSM and Hector clients share.

A small JSON API base (`JsonApi`) that sends each call through its client's transport
(`hector_sync.transport`: a retrying requests Session, paced by a `Throttle`), reads the answer
(at most MAX_ANSWER_BYTES, decoded as strict UTF-8) and turns every answer that is not a success
into a typed error from `hector_sync.errors`. Secrets (passwords, tokens, API keys)
travel only in request bodies and headers, which neither we nor urllib3/requests ever log, and
are scrubbed from any text a server sends back before it reaches an exception. They stay with
their host: a redirect is never followed (every call carries a password, a token or a key), and
no exception of requests/urllib3 is chained to ours, since its text can quote a header.
"""

from __future__ import annotations

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import requests
from pydantic import BaseModel, ValidationError
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry

from hector_sync.errors import (
    ApiError,
    BadRequest,
    CredentialsRejected,
    Duplicate,
    FieldProblem,
    InvalidData,
    NotFound,
    NotUtf8,
    PermissionMissing,
    System,
    Unavailable,
    UnexpectedAnswer,
    VersionConflict,
)
from hector_sync import textsafe
from hector_sync.transport import (
    _SPENT,
    REPLAYABLE_METHODS,
    TRANSIENT_STATUSES,
    Breaker,
    CallStats,
    RetryPolicy,
    Throttle,
    budget_file,
    build_session,
)

if TYPE_CHECKING:
    from hector_sync.config import SyncConfig

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Redirected(UnexpectedAnswer):
    """A 3xx answer, not followed: every call carries a credential (the C2 login its password,
    the others a token or the API key), and a followed 307/308 would resend it, body and all, to
    whatever address the Location names. `target` is that address's host[:port]; `setting` the
    configuration key that holds the url ("c2.url")."""

    target: str = ""
    setting: str = ""

    def __str__(self) -> str:
        return (
            f"{self.system} answered {self.call} with a redirect to {self.target}; "
            f"credentials are not sent to another address: fix {self.setting}"
        )

API_PREFIX = "/api/v1"
# The largest answer read: the contracts' largest page (500 CIs, or 1,000 Hector rows) is a few
# hundred kB, and 64 kB a row stays below it, while a proxy's or a broken server's endless body
# cannot eat the run's memory. Over it, an answer is refused, by its Content-Length unread.
MAX_ANSWER_BYTES = 64 * 2**20
# How much of a body is read at a time, and so how far past the cap a read may go.
READ_CHUNK_BYTES = 2**18

ModelT = TypeVar("ModelT", bound=BaseModel)


def header_safe(value: str) -> bool:
    """Whether `value` can travel in an HTTP header as it is: not empty, no surrounding space, no
    control character (a line break would end the header and start another), Latin-1 only (how
    http.client encodes headers). requests refuses such a value with an error quoting it."""
    return (
        bool(value)
        and value == value.strip()
        and all(" " <= char <= "~" or "\xa0" <= char <= "\xff" for char in value)
    )


def call_name(method: str, path: str) -> str:
    """How errors and logs name a call: "GET /api/v1/cmdbs", never with the query string."""
    return f"{method} {API_PREFIX}{path}"


def utc_z(instant: datetime) -> str:
    """ISO 8601 UTC with `Z`, rounded down to the second so a `since` filter never misses a record."""
    if instant.tzinfo is None:
        raise ValueError("a timestamp for C2 ITSM or Hector must carry a timezone (naive given)")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def path_of(*segments: str | int) -> str:
    """Join ids into a URL path, quoting each so an id can never change the path's shape."""
    return "".join("/" + quote(str(s), safe="") for s in segments)


class JsonApi(ABC):
    """A JSON REST API at `{url}/api/v1`: sends, counts, decodes and maps errors to types.

    Subclasses set `system`, authenticate (a session header, or their own `_call`), name their
    secrets so that server text quoting one is scrubbed before it reaches an exception, and say
    where a rejected credential is configured. `rate_limit_per_s` caps the calls per second of
    all threads together (None: no cap); a Retry-After is honoured either way (`Throttle`).
    With a rate limit, `budget_beside` (the DuckDB file) makes the cap, and every Retry-After,
    hold for all the processes of the deployment together (`Throttle`, `budget_file`).
    """

    system: ClassVar[System]
    section: ClassVar[str]  # the configuration section of its settings ("c2"), for messages

    def __init__(
        self,
        url: str,
        *,
        verify_tls: bool,
        retry: RetryPolicy,
        account: str | None,
        rate_limit_per_s: float | None = None,
        budget_beside: Path | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the url is not repeated: a mistyped one may hold a pasted password
            raise ValueError(f"the {self.system} url must look like https://host[:port][/path]")
        if parts.username or parts.password:
            raise ValueError(f"the {self.system} url must not contain credentials; configure them apart")
        self.url = url.rstrip("/")
        self.host = parts.netloc
        self.account = account
        self.retry = retry
        self.verify_tls = verify_tls
        self.stats = CallStats()
        self.breaker = Breaker()
        budget = budget_file(budget_beside, self.section, self.host) if budget_beside and rate_limit_per_s else None
        self.throttle = Throttle(rate_limit_per_s, budget)
        self._replayable = retry.build(self.throttle).new(allowed_methods=REPLAYABLE_METHODS | {"POST"})
        # for a call whose every outcome must be known (a C2 ITSM create): only a 429, which says
        # "not processed", is retried; a 5xx may come after the server acted on the call
        self._once = retry.build(self.throttle).new(status_forcelist=frozenset({429}))
        self._session = build_session(retry, verify_tls, self.throttle)
        self._listed: dict[tuple[str, ...], list[Any]] = {}
        if not verify_tls:
            log.warning(
                "TLS certificate verification is OFF for %s at %s: anyone on the network path can "
                "impersonate the server and read the credentials. Use this only with a test server.",
                self.system,
                self.url,
            )
        if parts.scheme.lower() == "http":  # the configuration only allows it with allow_insecure_http
            log.warning(
                "Plain HTTP (no TLS) for %s at %s: the credentials cross the network unencrypted, "
                "readable by anyone on the path (allow_insecure_http: true). Use this only with a test server.",
                self.system,
                self.url,
            )

    @classmethod
    def for_sync(cls, config: SyncConfig) -> Self:
        """The client a sync runs on: its section of `config`, and its rate limit shared by every
        run through a budget beside the DuckDB file."""
        return cls.from_settings(getattr(config, cls.section), budget_beside=config.storage.duckdb_path)

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any, *, budget_beside: Path | None = None) -> Self:
        """Build from the system's section of the configuration."""

    def __repr__(self) -> str:
        user = f", user={self.account!r}" if self.account else ""
        return f"{type(self).__name__}(url={self.url!r}{user})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @abstractmethod
    def _secrets(self) -> Iterable[str]:
        """Every secret value this client holds, to scrub from what servers say."""

    def _redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "***")
        return text

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        replay: bool = False,
        once: bool = False,
    ) -> Any:
        """Send one call and return its decoded JSON, or raise the typed error of its answer.

        `replay`: the contract makes this POST safe to send again (a second one is answered 409
        duplicate), so a lost answer is retried like a GET's.
        `once`: this call must not be sent twice unless its answer says it was not processed: a
        429 is retried, a 5xx is raised at once (Unavailable with its status), and a lost answer
        or a timeout is never replayed (Unavailable without a status). A connection that could
        not be made is still retried: nothing was sent.
        """
        call = call_name(method, path)
        started = time.monotonic()
        down = self.breaker.opened(self.retry.breaker_s)
        if down is not None:
            raise self._error(Unavailable, call, reason=f"it stayed unavailable {down[0]:.0f} s ago ({down[1]}), "
                              f"so it is not called again for {self.retry.breaker_s:g} s")
        failed: tuple[int, str] | None = None
        try:
            response = self._send(
                method, self.url + API_PREFIX + path, replay=replay, once=once, params=params, json=body,
                headers=headers,
            )
        except (requests.RequestException, Urllib3Error) as exc:
            failed = self._failure(method, exc)
        except _TooLarge as big:  # an answer, but none to read: never asked for again
            self.stats.record(method, big.retries)
            raise self._error(UnexpectedAnswer, call, status=big.status, message=big.reason) from None
        if failed is not None:
            # Raised here, outside the handler, so that nothing chains the library's exception:
            # its text can quote a request header (requests' InvalidHeader holds "Bearer <key>").
            retries, reason = failed
            self.stats.record(method, retries)
            log.debug("%s %s failed after %d retries: %s", self.system, call, retries, reason)
            if retries >= self.retry.total:
                self.breaker.trip(f"{call}: {reason}")
            raise self._error(Unavailable, call, retries=retries, reason=reason)
        retries = len(getattr(response.raw.retries, "history", ()))
        self.stats.record(method, retries)
        if response.status_code in TRANSIENT_STATUSES and retries >= self.retry.total:
            self.breaker.trip(f"{call}: {response.status_code}")
        elif response.status_code < 500:
            self.breaker.reset()
        log.debug(
            "%s %s -> %d in %.3f s, %d retries",
            self.system, call, response.status_code, time.monotonic() - started, retries,
        )
        if 300 <= response.status_code < 400:
            raise self._redirect_error(response, call)
        if response.status_code >= 400:
            raise self._answer_error(response, call, retries)
        return self._decoded(response, call)

    def _send(self, method: str, url: str, *, replay: bool, once: bool = False, **kwargs: Any) -> requests.Response:
        """Send a call and read its whole body, unless it is over MAX_ANSWER_BYTES (`_TooLarge`).

        requests reads the body after urllib3's retry loop, so a connection cut in the middle of
        it is retried here, by urllib3's own Retry: REPLAYABLE_METHODS only, the same backoff,
        and one budget per call, the replay going on from the retries already spent.

        The throttle is passed here before the first attempt only: every later one, urllib3's
        retries and these replays alike, passes it in `TransientRetry.sleep`.
        """
        spent: Retry | None = self._once if once else self._replayable if replay else None
        self.throttle.wait()
        while True:
            carried = _SPENT.set(spent)
            try:
                # verify per request: a session's verify=False loses to REQUESTS_CA_BUNDLE (requests#3829);
                # no redirect is followed: it would carry the call's credentials elsewhere (`_redirect_error`)
                response = self._session.request(
                    method, url, stream=True, timeout=self.retry.timeout, verify=self.verify_tls,
                    allow_redirects=False, **kwargs
                )
            finally:
                _SPENT.reset(carried)
            try:
                _read_capped(response, MAX_ANSWER_BYTES)
                return response
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                response.close()
                # re-raises the cut for a POST, MaxRetryError once the budget is spent
                spent = response.raw.retries.increment(method, url, error=exc.args[0])
                spent.sleep()  # the backoff, then the throttle

    def _decoded(self, response: requests.Response, call: str) -> Any:
        """The answer's JSON, read as UTF-8, as JSON on the wire is (RFC 8259, and both contracts):
        never guessed nor patched with U+FFFD, which would reach the other system as data. Bytes
        that are not UTF-8, or a lone surrogate escaped as \\udcxx, raise `NotUtf8` naming the items."""
        body = response.content
        try:
            decoded, strict = body.decode("utf-8"), True
        except UnicodeDecodeError:
            decoded, strict = body.decode("utf-8", "surrogateescape"), False  # bad bytes → U+DC80–U+DCFF
        try:
            data = json.loads(decoded)
        except ValueError:
            raise self._error(
                UnexpectedAnswer, call, status=response.status_code, message="the body is not JSON"
            ) from None
        if not strict or _ESCAPED_SURROGATE.search(decoded):
            places = _not_utf8_places(data)
            if places:
                raise self._error(NotUtf8, call, status=response.status_code, items=places)
        return data

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated `_request` (overridden where authentication needs more than a header)."""
        return self._request(method, path, **kwargs)

    def listed_once(self, listing: Callable[..., list[ModelT]], *args: str) -> list[ModelT]:
        """`listing(*args)`, one of this client's reference lists (what names resolve against:
        CMDBs, categories, fields, stockrooms, attributes), asked once per client. A client
        serves one command, or one Dagster run: all its categories resolve their names from one
        reading, and the next command reads them afresh, since names can change between two."""
        key = (listing.__name__, *args)
        if key not in self._listed:
            self._listed[key] = listing(*args)
        return self._listed[key]

    def _fetch(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        """An authenticated call whose answer must match `model`."""
        return self._parse(model, self._call(method, path, **kwargs), call_name(method, path))

    def _record(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """An authenticated call answering one record, returned as the server sent it once we
        know it carries what a later write needs (id, version)."""
        answer = self._call(method, path, **kwargs)
        self._parse(_Record, answer, call_name(method, path))
        return answer

    def _parse(self, model: type[ModelT], data: Any, call: str) -> ModelT:
        """Validate what we need from an answer; a breach of the contract is UnexpectedAnswer."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = [
                FieldProblem(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise self._error(UnexpectedAnswer, call, details=problems[:5]) from None

    def _error(self, kind: type[ApiError], call: str, **facts: Any) -> ApiError:
        return kind(system=self.system, call=call, account=self.account, **facts)

    def _answer_error(self, response: requests.Response, call: str, retries: int) -> ApiError:
        """Map an error status and its `{"error": {...}}` body to the typed error."""
        status = response.status_code
        envelope = _error_envelope(response)
        code = envelope.code
        facts: dict[str, Any] = {
            "status": status,
            "code": code,
            "message": self._redact(envelope.message or ""),
            "details": [
                FieldProblem(self._redact(d.field), self._redact(d.reason)) for d in envelope.details
            ],
        }
        if status == 401:
            return self._error(CredentialsRejected, call, **facts, hint=self._credentials_hint())
        if status == 403:
            return self._error(PermissionMissing, call, **facts)
        if status == 404:
            return self._error(NotFound, call, **facts)
        if status == 409 and code == "version_conflict":
            return self._error(VersionConflict, call, **facts)
        if status == 409 and code == "duplicate":
            return self._error(Duplicate, call, **facts, existing_id=envelope.existing_id)
        if status == 422:
            return self._error(InvalidData, call, **facts)
        if status in TRANSIENT_STATUSES or status >= 500:
            return self._error(Unavailable, call, **facts, retries=retries)
        return self._error(BadRequest, call, **facts)

    def _redirect_error(self, response: requests.Response, call: str) -> Redirected:
        """A redirect answer as an error naming where it pointed (host[:port] only: a Location
        may carry user:password@ or a query); the address to fix is our own url."""
        location = response.headers.get("Location")
        target = "an address it did not give (no Location)"
        if location:
            moved = urlsplit(urljoin(response.url or self.url, location))
            host = moved.hostname or "?"
            target = f"[{host}]" if ":" in host else host
            try:
                port = moved.port
            except ValueError:
                port = None
            if port is not None:
                target += f":{port}"
            if moved.scheme and moved.scheme.lower() != urlsplit(self.url).scheme.lower():
                target = f"{moved.scheme.lower()}://{target}"
        return Redirected(system=self.system, call=call, status=response.status_code, account=self.account,
                          target=target, setting=f"{self.section}.url")

    @abstractmethod
    def _credentials_hint(self) -> str:
        """Where the operator fixes rejected credentials, for the 401 message."""

    def _failure(self, method: str, exc: requests.RequestException | Urllib3Error) -> tuple[int, str]:
        """How many retries a request without an answer made, and why it failed, in words."""
        wrapped = exc.args[0] if exc.args else None
        cause: BaseException = wrapped if isinstance(wrapped, BaseException) else exc
        retries = 0
        if isinstance(cause, MaxRetryError):
            cause = cause.reason
            retries = 0 if isinstance(cause, Urllib3SSLError) else self.retry.total
        host = self.host
        if isinstance(cause, NameResolutionError):
            return retries, f"the name {host.rsplit(':', 1)[0]} does not resolve"
        if isinstance(cause, NewConnectionError):
            refused = isinstance(cause.__cause__, ConnectionRefusedError)
            return retries, f"{host} refused the connection" if refused else f"cannot connect to {host}"
        if isinstance(cause, ConnectTimeoutError):
            return retries, f"{host} did not accept a connection within {self.retry.connect_timeout:g} s"
        if isinstance(cause, Urllib3SSLError) or isinstance(exc, requests.exceptions.SSLError):
            return retries, f"the TLS handshake with {host} failed (is its certificate trusted?)"
        maybe_done = "" if method in REPLAYABLE_METHODS else "; the request may have been processed"
        if isinstance(cause, ReadTimeoutError) or isinstance(exc, requests.exceptions.ReadTimeout):
            return retries, f"{host} gave no answer within {self.retry.read_timeout:g} s{maybe_done}"
        if isinstance(exc, requests.exceptions.InvalidHeader):  # nothing was sent; its text quotes the header
            return 0, "a request header holds a character HTTP does not allow (a secret with a line break?)"
        if isinstance(cause, ProtocolError):  # before the answer, or in the middle of its body
            return retries, f"{host} dropped the connection{maybe_done}"
        return retries, f"the call to {host} failed: {type(cause).__name__}"


class _Record(BaseModel):
    id: int | str
    version: int


class _ProblemBody(BaseModel):
    field: str
    reason: str


class _ErrorBody(BaseModel):
    code: str | None = None
    message: str | None = None
    details: list[_ProblemBody] = []
    existing_id: int | str | None = None


def _error_envelope(response: requests.Response) -> _ErrorBody:
    """The `error` object of an error answer; an empty one when a proxy sent HTML or nothing."""
    try:
        return _ErrorBody.model_validate(response.json()["error"])
    except (ValueError, KeyError, TypeError, ValidationError):
        return _ErrorBody(message=response.reason or None)


class _TooLarge(Exception):
    """An answer over the size cap (`_read_capped`): `reason` says how it showed."""

    def __init__(self, response: requests.Response, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = response.status_code, reason
        self.retries = len(getattr(response.raw.retries, "history", ()))


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def _read_capped(response: requests.Response, cap: int) -> None:
    """Read the answer's body into `response.content`, unless it is over `cap` bytes: then
    `_TooLarge`, by its Content-Length before a byte is read, else as soon as what came passes
    the cap (a chunked body announces no length). A body cut short raises as requests' own read."""
    declared = response.headers.get("Content-Length", "")
    beyond = f"the {_size(cap)} an answer may hold, far above the contract's largest page"
    if declared.isdigit() and int(declared) > cap and response.request.method != "HEAD":
        response.close()
        raise _TooLarge(response, f"its Content-Length of {int(declared):,} bytes is over {beyond}; refused unread")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > cap:
            response.close()
            raise _TooLarge(response, f"its body ran past {beyond}; reading stopped there")
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what `.content` and `.json()` give, as after requests' own read


# Text that was not UTF-8 on the wire: undecodable bytes as surrogateescape makes them
# (U+DC80–U+DCFF), or a surrogate a \uXXXX escape left alone (a valid pair decodes as one character).
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
MOST_PLACES = 5  # items named in a NotUtf8 error; the rest are counted


def _undecodable(node: Any, owner: dict[str, Any] | None = None, path: tuple[str, ...] = ()
                 ) -> Iterator[tuple[dict[str, Any] | None, str, str]]:
    """(nearest object with an `id`, path from it, the text) of each key or string in `node`
    holding text that was not UTF-8."""
    if isinstance(node, dict):
        if "id" in node:
            owner, path = node, ()
        for key, item in node.items():
            if _SURROGATE.search(key):
                yield owner, ".".join((*path, key)), key
            yield from _undecodable(item, owner, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _undecodable(item, owner, (*path, str(index)))
    elif isinstance(node, str) and _SURROGATE.search(node):
        yield owner, ".".join(path), node


def _shown(value: object) -> str:
    """A value for a message, quoted: bytes that were not UTF-8 as \\xNN, the rest escaped, cut short."""
    raw = "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in str(value))
    return f'"{textsafe.text(textsafe.shortened(raw, 80))}"'


def _not_utf8_places(data: Any) -> list[str]:
    """Each item holding text that was not UTF-8, by id (and name, title, asset tag), with the
    fields and their text: what `NotUtf8` says."""
    fields_of: dict[int, tuple[dict[str, Any] | None, list[str]]] = {}
    for owner, where, found in _undecodable(data):
        fields_of.setdefault(id(owner), (owner, []))[1].append(f"{where or 'the answer itself'} = {_shown(found)}")
    places = []
    for owner, fields in fields_of.values():
        who = "the answer"
        if owner is not None:
            names = [f'{key.replace("_", " ")} {_shown(owner[key])}' for key in ("name", "title", "asset_tag")
                     if isinstance(owner.get(key), str)]
            who = f"item {textsafe.text(owner['id'])}" + (f" ({', '.join(names)})" if names else "")
        places.append(f"{who} at {', '.join(fields)}")
    more = len(places) - MOST_PLACES
    return places[:MOST_PLACES] + ([f"{more} more item{'s' * (more != 1)}"] if more > 0 else [])
