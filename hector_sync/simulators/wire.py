"""What both simulators put on the wire: JSON responses, the common error body, and parsing
of the request parts the two contracts share (JSON bodies, instants, dates, If-Match)."""

import json
import math
import re
import time
from collections.abc import Collection
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AfterValidator, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

API = "/api/v1"
# codes for the errors Starlette raises itself (unknown path, wrong method, unreadable request)
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class SimError(Exception):
    """An answer other than success; raised anywhere in a handler, rendered as the error body."""

    def __init__(self, status: int, code: str, message: str, *,
                 details: list[dict[str, str]] | None = None, existing_id: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.existing_id, self.headers = details, existing_id, headers

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        if self.existing_id is not None:
            error["existing_id"] = self.existing_id
        return json_response({"error": error}, self.status, headers=self.headers)


def invalid(details: list[dict[str, str]]) -> SimError:
    """422 invalid_field naming every problem, so one round trip shows the client all of them."""
    summary = "; ".join(f"{d['field']}: {d['reason']}" for d in details)
    return SimError(422, "invalid_field", f"invalid data: {summary}", details=details)


def json_bytes(data: Any) -> bytes:
    """Compact UTF-8 JSON (non-ASCII kept as is), far cheaper than FastAPI's encoder for pages."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(data), status, headers=headers, media_type="application/json")


def with_latin1_items(body: bytes, ids: Collection[str]) -> bytes:
    """JSON `body` with the strings of each object whose id (as text) is in `ids` sent in Latin-1
    (a character beyond it as "?"), as a legacy backend does: "Müller" leaves as b"M\\xfcller".
    The bytes ride through str as surrogateescape makes them, which json.dumps leaves alone."""

    def latin1(node: Any, inside: bool) -> Any:
        if isinstance(node, dict):
            inside = inside or ("id" in node and str(node["id"]) in ids)
            return {key: latin1(item, inside) for key, item in node.items()}
        if isinstance(node, list):
            return [latin1(item, inside) for item in node]
        if isinstance(node, str) and inside:
            return node.encode("latin-1", "replace").decode("utf-8", "surrogateescape")
        return node

    data = latin1(json.loads(body), False)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")


def install_error_handlers(app: FastAPI) -> None:
    """Every error, FastAPI's own included, leaves in the contract's `{"error": {...}}` shape."""

    async def sim_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, SimError)
        return exc.response()

    async def bad_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()]
        return SimError(400, "bad_request", "; ".join(problems)).response()

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "error")
        return SimError(exc.status_code, code, str(exc.detail), headers=exc.headers).response()

    async def crash(_: Request, exc: Exception) -> Response:
        return SimError(500, "internal", f"simulator error: {exc!r}").response()

    app.add_exception_handler(SimError, sim_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)


async def read_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body; anything else is a 400, not a 422."""
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise SimError(400, "bad_request", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SimError(400, "bad_request", "body must be a JSON object")
    return body


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's complaints as the contract's `details` entries."""
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body",
             "reason": "unknown field" if e["type"] == "extra_forbidden"
             else e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()]


def date_problem(value: object) -> str | None:
    """Why `value` is not a "YYYY-MM-DD" calendar date, or None when it is one."""
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return 'must be a date "YYYY-MM-DD"'
    try:
        date.fromisoformat(value)
    except ValueError:
        return f"{value} is not a calendar date"
    return None


def _check_date(value: str) -> str:
    problem = date_problem(value)
    if problem:
        raise ValueError(problem)
    return value


IsoDate = Annotated[str, AfterValidator(_check_date)]


def parse_instant(value: str, name: str) -> float:
    """Epoch seconds of an ISO 8601 instant; an instant without offset is ambiguous, so a 400."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SimError(400, "bad_request",
                       f"{name} is not an ISO 8601 instant: {value!r}") from None
    if parsed.tzinfo is None:
        raise SimError(400, "bad_request", f"{name} needs a UTC offset (e.g. Z): {value!r}")
    return parsed.timestamp()


def write_stamp() -> int:
    """Now, rounded *up* to the second shown in timestamps, so that a `…_since` equal to any
    instant before a write always finds it."""
    return math.ceil(time.time())


def parse_if_match(value: str | None) -> int:
    """The version an update is conditioned on; a write without one is refused (428)."""
    if value is None:
        raise SimError(428, "precondition_required",
                       "If-Match with the current version is required")
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise SimError(400, "bad_request", f"If-Match must be a version number, not {value!r}")
    return int(text)


def check_version(current: int, expected: int, what: str) -> None:
    if current != expected:
        raise SimError(409, "version_conflict",
                       f"{what} is at version {current}, not {expected}")
