"""Typed errors of the C2 ITSM and Hector clients.

Each error keeps the facts (system, call, status, error code, offending fields) for code that
reacts to it, and its str() is one sentence an IT operator can act on, because that sentence is
what Dagster shows in the run log and what the notification e-mail quotes. Errors are
dataclasses that pickle by keyword, so they survive Dagster's step serialization intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Self

System = Literal["C2 ITSM", "Hector"]


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field a server refused, and why (the `details` of a 422 answer)."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _rebuild(cls: type[ApiError], kwargs: dict[str, Any]) -> ApiError:
    """Unpickle an ApiError by calling its constructor with the fields it was built with."""
    return cls(**kwargs)


@dataclass(eq=False)
class ApiError(Exception):
    """A call to C2 ITSM or Hector that did not give the answer we need.

    `call` is "METHOD /api/v1/path" without the query string; `account` is the C2 user the call
    ran as (None for Hector, which authenticates with an API key); `message` is the server's
    own explanation, with every secret already removed.
    """

    system: System
    call: str
    status: int | None = None
    code: str | None = None
    message: str = ""
    details: list[FieldProblem] = field(default_factory=list)
    account: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __reduce__(self) -> tuple[Any, tuple[type[Self], dict[str, Any]]]:
        return _rebuild, (type(self), {f.name: getattr(self, f.name) for f in fields(self)})

    def __str__(self) -> str:
        return f"{self.system} {self._what()} ({self._where()}){self._why()}"

    def _what(self) -> str:
        return "gave an answer hector_sync did not expect"

    def _where(self) -> str:
        return self.call if self.status is None else f"{self.call}, {self.status}"

    def _why(self) -> str:
        reasons = "; ".join(str(d) for d in self.details) or self.message or self.code
        return f": {reasons}" if reasons else ""


@dataclass(eq=False)
class UnexpectedAnswer(ApiError):
    """A success answer whose body breaks the contract (not JSON, a required key missing)."""


@dataclass(eq=False)
class NotUtf8(UnexpectedAnswer):
    """An answer holding bytes that are not UTF-8, which JSON on the wire must be (RFC 8259,
    and both contracts): guessed or replaced, they would reach the other system as mojibake or
    U+FFFD. `items` names where, one entry per item: its id, name or asset tag, and the fields."""

    items: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.system} answered {self.call} with bytes that are not UTF-8 in {'; '.join(self.items)}: "
                f"fix that text in {self.system}, or the encoding of whatever serves its API, then rerun")


@dataclass(eq=False)
class CredentialsRejected(ApiError):
    """401: the password or API key is wrong, expired or revoked; `hint` says where it is set."""

    hint: str | None = None

    def _what(self) -> str:
        return f"rejected the credentials of {self.account}" if self.account else "rejected the API key"

    def _why(self) -> str:
        return f": {self.hint}" if self.hint else ""


@dataclass(eq=False)
class PermissionMissing(ApiError):
    """403: the account authenticates but may not do this (a read-only C2 account writing)."""

    @property
    def _kind(self) -> str:
        return "read" if self.call.startswith("GET ") else "write"

    def _what(self) -> str:
        who = f"the account {self.account}" if self.account else "the API key"
        return f"refused a {self._kind}: {who} lacks {self._kind} permission"

    def _why(self) -> str:
        return f": give it {self._kind} permission in {self.system}, or use an account that has it"


@dataclass(eq=False)
class NotFound(ApiError):
    """404: the record is gone (or never existed)."""

    def _what(self) -> str:
        return "has no such record"


@dataclass(eq=False)
class VersionConflict(ApiError):
    """409 version_conflict: the record changed since we read it, so our write was not applied."""

    def _what(self) -> str:
        return "refused an update because the record changed since it was read"

    def _why(self) -> str:
        return ""


@dataclass(eq=False)
class Duplicate(ApiError):
    """409 duplicate: the record already exists as `existing_id` (also after a retried create)."""

    existing_id: int | str | None = None

    def _what(self) -> str:
        return f"refused a duplicate of existing record {self.existing_id}"


@dataclass(eq=False)
class InvalidData(ApiError):
    """422: the server refused the values we sent; `details` names each offending field."""

    def _what(self) -> str:
        return "refused invalid data"


@dataclass(eq=False)
class BadRequest(ApiError):
    """Any other 4xx: an answer, not a fault, so it is never retried."""

    def _what(self) -> str:
        return "refused the request"


@dataclass(eq=False)
class Unavailable(ApiError):
    """The server could not be reached or stayed faulty: transient faults still failing after
    `retries` retries, connection refused, timeouts, 5xx. `reason` describes a failure that
    produced no HTTP answer at all (then `status` is None).
    """

    retries: int = 0
    reason: str | None = None

    def __str__(self) -> str:
        after = f" after {self.retries} {'retry' if self.retries == 1 else 'retries'}" if self.retries else ""
        return (
            f"{self.system} is unavailable: {self.reason or self.status}{after} ({self.call}){self._why()}; "
            f"check that {self.system} is up and reachable from this machine, then rerun"
        )
