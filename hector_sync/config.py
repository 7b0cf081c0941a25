"""The operator's configuration file (docs/configuration.md), read, checked and typed.

An operator fixes a YAML file, not a traceback: every problem the loader finds becomes one
`ConfigError` sentence naming the file, the category (or section) and the field. Secrets are only
ever names of environment variables, so no object built here can print one.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Hashable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from datetime import timedelta

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from hector_sync.demo import DEMO_CONFIG_PATH, DEMO_ENV, DEMO_FOLDER, is_demo_file

CONFIG_ENV_VAR = "HECTOR_SYNC_CONFIG"
DEFAULT_MAX_PLAN_AGE = timedelta(hours=6)
DEFAULT_MAX_READ_TIME = timedelta(hours=2)
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

ASSET_FIELDS = (
    "title",
    "asset_tag",
    "note",
    "acquisition_date",
    "assigned_date",
    "return_date",
    "maintenance_date",
    "end_of_life_date",
)
MODEL_FIELDS = ("maker", "model", "description", "note", "price", "weight", "vendor_sku")
# Hector files an asset under the subcategory these three name, so a syncing category needs all.
REQUIRED_MODEL_FIELDS = ("maker", "model", "description")
MAPPING_SECTIONS = ("model", "model_attributes", "asset", "asset_attributes")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

_KEY = re.compile(r"[a-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_PROBLEM = "hector_sync_config"


class ConfigError(Exception):
    """A configuration the loader refuses, said as one line the operator can act on.

    `category` is set for problems inside a category, `section` (e.g. "c2") for the others;
    `field` is the path below it ("model.maker"). None of them ever holds a secret value.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        category: str | None = None,
        section: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = " ".join(message.split())
        self.file = Path(file) if file is not None else None
        self.category = category
        self.section = section
        self.field = field
        where = [f"category '{category}'" if category else f"section '{section}'" if section else ""]
        if field:
            where.append(f"field '{field}'")
        parts = [str(file) if file is not None else "", ", ".join(p for p in where if p), self.message]
        super().__init__(": ".join(p for p in parts if p))


def _problem(message: str, field: str | None = None, category: str | None = None) -> PydanticCustomError:
    """A validation error that keeps our wording and says which field below the failing model."""
    ctx = {"message": message} | {k: v for k, v in (("field", field), ("category", category)) if v}
    return PydanticCustomError(_PROBLEM, "{message}", ctx)


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError(f"'{value}' is not an e-mail address")
    return value


def _url(value: str) -> str:
    """Require http(s)://host and drop a trailing slash, so clients can append `/api/...`.

    The value is not repeated in the messages: a URL may carry a password (`user:pw@host`).
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http:// or https:// address")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials: a secret is written {env: VARIABLE} in its own key")
    return value.rstrip("/")


def _rate(value: float) -> float:
    if not 0 < value < math.inf:
        raise ValueError(f"{value:g} is not a number of calls per second above 0, e.g. 20 (leave it out for no limit)")
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Email = Annotated[Text, AfterValidator(_email)]
Url = Annotated[Text, AfterValidator(_url)]
# strict: `yes` would otherwise load as 1 call per second
CallsPerSecond = Annotated[float, Strict(), AfterValidator(_rate)]


class _Strict(BaseModel):
    """A section of the file: immutable, and a misspelt key is refused rather than ignored.

    A typo such as `identify-by` would otherwise silently change what a sync does.
    """

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    known = ", ".join(cls.model_fields)
                    raise _problem(f"unknown key; the keys here are: {known}", field=str(key))
        return data


class Direction(StrEnum):
    """Which way a category (or, under per_field, a field) flows, and the words for it: every
    module asks the direction rather than keeping its own table of systems and names.

    A change set, a plan and a writeback go one of the two ways (`C2_TO_HECTOR`, `HECTOR_TO_C2`);
    a category is any of the four, and `flows` says which change sets it makes.
    """

    NONE = "none"
    C2_TO_HECTOR = "c2_to_hector"
    HECTOR_TO_C2 = "hector_to_c2"
    PER_FIELD = "per_field"

    @property
    def flows(self) -> tuple[Direction, ...]:
        """The change sets a category of this direction makes: per_field makes both, each with its fields."""
        return {Direction.NONE: (), Direction.PER_FIELD: (Direction.C2_TO_HECTOR, Direction.HECTOR_TO_C2)}.get(
            self, (self,))

    @property
    def source(self) -> System:
        """The system a change set this way reads from (and whose snapshot decides its full reads)."""
        return _ONE_WAY[self][0]

    @property
    def target(self) -> System:
        """The system a change set this way writes to."""
        return _ONE_WAY[self][1]

    @property
    def source_items(self) -> str:
        return _ITEMS[self.source]

    @property
    def target_items(self) -> str:
        return _ITEMS[self.target]

    @property
    def arrow(self) -> str:
        return f"{SYSTEM_NAMES[self.source]} → {SYSTEM_NAMES[self.target]}"


System = Literal["c2", "hector"]
SYSTEM_NAMES: dict[System, str] = {"c2": "C2 ITSM", "hector": "Hector"}
_ITEMS: dict[System, str] = {"c2": "CIs", "hector": "assets"}
_ONE_WAY: dict[Direction, tuple[System, System]] = {
    Direction.C2_TO_HECTOR: ("c2", "hector"), Direction.HECTOR_TO_C2: ("hector", "c2")}
TO_HECTOR, TO_C2 = Direction.C2_TO_HECTOR, Direction.HECTOR_TO_C2


class Secret(_Strict):
    """A credential named by its environment variable; the file holds `{env: VAR}`, never a value."""

    env: str

    @model_validator(mode="before")
    @classmethod
    def _not_in_clear(cls, data: Any) -> Any:
        if not isinstance(data, (dict, Secret)):  # never repeat the value: it may be the secret
            raise ValueError(
                "a secret is never written in the file: write {env: VARIABLE} "
                "and set VARIABLE in the environment"
            )
        return data

    @field_validator("env")
    @classmethod
    def _variable_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):  # not echoed: it may be a pasted secret
            raise ValueError("env must name an environment variable (letters, digits and _)")
        return value

    def reveal(self) -> str:
        """Read the value now, at use time, so rotating a secret needs no change to the file.

        Surrounding whitespace is dropped: `kubectl create secret --from-file` and most editors
        end the value with a newline. A control character left inside (a line break, NUL, tab)
        cannot travel in an HTTP header, and a line break there would even inject a header of
        its own: refused, naming the variable and never the value.
        """
        value = (os.environ.get(self.env) or "").strip()
        if not value:
            raise ConfigError(
                f"the environment variable {self.env} is not set or empty; "
                f"the configuration reads a secret from it ({self})"
            )
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ConfigError(
                f"the environment variable {self.env} holds a line break or another control character "
                f"inside its value, which cannot be sent in an HTTP header; set it to the secret alone, "
                f"on one line ({self})"
            )
        return value

    def __repr__(self) -> str:
        return f"{{env: {self.env}}}"

    __str__ = __repr__


class FieldMap(_Strict):
    """One mapped field: the C2 field it pairs with and the way it flows."""

    c2: Text
    direction: Direction

    @model_validator(mode="before")
    @classmethod
    def _long_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("write a C2 field name, or {c2: FIELD, direction: DIRECTION}")
        return data


class IdentifyBy(_Strict):
    """How an unlinked CI and an unlinked asset are recognised as the same item."""

    c2: Text
    hector: Text


class CategoryConfig(_Strict):
    """One linked C2 category; its `key` is the Dagster partition key."""

    key: str
    cmdb: Text
    c2_category: Text
    hector_category: Text
    direction: Direction
    model: dict[str, FieldMap] = {}
    model_attributes: dict[str, FieldMap] = {}
    asset: dict[str, FieldMap] = {}
    asset_attributes: dict[str, FieldMap] = {}
    identify_by: IdentifyBy | None = None
    on_missing: Literal["ignore", "retire"] = "ignore"
    max_change_fraction: float = 0.2

    @model_validator(mode="before")
    @classmethod
    def _expand_short_forms(cls, data: Any) -> Any:
        """Write every mapping long-hand so that the code after the loader sees one shape.

        `maker: Manufacturer` takes the category's direction; a long form may leave its
        direction out for the same effect. Under per_field only the long form is accepted.
        """
        if not isinstance(data, dict):
            return data
        try:
            direction = Direction(data.get("direction"))
        except ValueError:
            return data  # the direction field reports it, before any mapping
        expanded = dict(data)
        for section in MAPPING_SECTIONS:
            entries = {} if data.get(section) is None else data[section]
            if isinstance(entries, dict):
                expanded[section] = {
                    name: _expand(value, direction, f"{section}.{name}") for name, value in entries.items()
                }
        return expanded

    @field_validator("key")
    @classmethod
    def _key_syntax(cls, value: str) -> str:
        if not _KEY.fullmatch(value):
            raise ValueError(f"'{value}' is not a valid key: use lower-case letters, digits, - and _")
        return value

    @field_validator("max_change_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"{value} is not a fraction above 0 and at most 1 (0.2 means 20 %)")
        return value

    @model_validator(mode="after")
    def _check_mappings(self) -> CategoryConfig:
        for section, allowed, kind in (("model", MODEL_FIELDS, "subcategory"), ("asset", ASSET_FIELDS, "asset")):
            for name in getattr(self, section):
                if name not in allowed:
                    raise _problem(
                        f"'{name}' is not a Hector {kind} field; use one of: {', '.join(allowed)}",
                        f"{section}.{name}",
                    )
        mapped = self._mapped()
        for path, field_map in mapped.items():
            _check_field_direction(self.direction, field_map.direction, path)
        if self.direction is Direction.NONE:
            return self  # parked: may be half-written until it is switched on
        for name in REQUIRED_MODEL_FIELDS:
            if name not in self.model:
                raise _problem(
                    f"select at least one field for the {name.capitalize()} — "
                    "maker, model and description must each be mapped to a C2 field",
                    f"model.{name}",
                )
        if self.direction is Direction.PER_FIELD:  # otherwise all flow the category's way already
            maker_flow = self.model["maker"].direction
            for name in REQUIRED_MODEL_FIELDS[1:]:
                if self.model[name].direction is not maker_flow:
                    raise _problem(
                        f"flows {self.model[name].direction} but model.maker flows {maker_flow}; "
                        "under per_field maker, model and description must all flow the same way",
                        f"model.{name}.direction",
                    )
        written_from: dict[str, str] = {}
        for path, field_map in mapped.items():
            if field_map.direction is Direction.HECTOR_TO_C2:
                if field_map.c2 in written_from:
                    raise _problem(
                        f"C2 field '{field_map.c2}' is already written from {written_from[field_map.c2]}; "
                        "flowing hector_to_c2, a C2 field takes its value from one Hector field only",
                        path,
                    )
                written_from[field_map.c2] = path
        return self

    def _mapped(self) -> dict[str, FieldMap]:
        """Every mapping of the category, keyed by its path in the file ("model.maker")."""
        return {
            f"{section}.{name}": field_map
            for section in MAPPING_SECTIONS
            for name, field_map in getattr(self, section).items()
        }


def _expand(value: Any, direction: Direction, field: str) -> Any:
    """One mapping entry, long-hand with the category's direction where the file left it out."""
    if direction is Direction.PER_FIELD:
        if isinstance(value, str):
            raise _problem(
                f"the short form is refused under direction: per_field; write "
                f"{{c2: {value}, direction: c2_to_hector}} (or hector_to_c2)",
                field,
            )
        return value
    if isinstance(value, str):
        return {"c2": value, "direction": direction}
    if isinstance(value, dict):
        return {"direction": direction} | value
    return value


def _check_field_direction(category: Direction, field: Direction, path: str) -> None:
    """Only per_field gives fields their own direction, and there each must actually flow."""
    if category is Direction.PER_FIELD:
        if field not in (Direction.C2_TO_HECTOR, Direction.HECTOR_TO_C2):
            raise _problem(
                f"under per_field a field flows c2_to_hector or hector_to_c2, not {field}; "
                "to stop syncing a field, remove its mapping",
                f"{path}.direction",
            )
    elif field is not category:
        raise _problem(
            f"says {field} but the category's direction is {category}; only per_field categories "
            "give fields their own direction (leave it out here)",
            f"{path}.direction",
        )


class C2Settings(_Strict):
    """The C2 ITSM environment and its read/write service account.

    `rate_limit_per_s` keeps the client's calls (all threads together) under the server's limit
    rather than finding it by 429s; None sends as fast as the writers go.

    Over a plain http:// url the password and the tokens cross the network readable by anyone
    on the path, so it takes `allow_insecure_http: true` (a test server, such as the bundled
    simulators); the client then logs a warning (see `JsonApi`).
    """

    url: Url
    username: Text
    password: Secret
    verify_tls: bool = True
    allow_insecure_http: bool = False
    rate_limit_per_s: CallsPerSecond | None = None

    @model_validator(mode="after")
    def _tls_unless_allowed(self) -> C2Settings:
        if urlsplit(self.url).scheme.lower() == "http" and not self.allow_insecure_http:
            raise self._plain_http_refused("c2")
        return self

    @staticmethod
    def _plain_http_refused(section: str) -> PydanticCustomError:
        return _problem(
            "is a plain http:// address, which sends the credentials unencrypted: use https://, "
            f"or set allow_insecure_http: true in section '{section}' (a test server only)",
            "url",
        )


class HectorSettings(_Strict):
    """The Hector instance and its API key; `rate_limit_per_s` and `allow_insecure_http` as for C2."""

    url: Url
    api_key: Secret
    verify_tls: bool = True
    allow_insecure_http: bool = False
    rate_limit_per_s: CallsPerSecond | None = None

    @model_validator(mode="after")
    def _tls_unless_allowed(self) -> HectorSettings:
        if urlsplit(self.url).scheme.lower() == "http" and not self.allow_insecure_http:
            raise C2Settings._plain_http_refused("hector")
        return self


class SmtpSettings(_Strict):
    """How the e-mail about a failed sync reaches `notify_on_error`.

    `starttls: true` upgrades a plain connection, `tls: implicit` speaks TLS from the first byte
    (SMTPS, port 465 unless `port` says otherwise); either way the server's certificate and name
    are verified against the system's CAs (or $SSL_CERT_FILE). A login is never sent in clear.
    """

    host: Text
    port: int = Field(default=25, ge=1, le=65535)
    sender: Email
    starttls: bool = False
    tls: Literal["implicit"] | None = None
    username: Text | None = None
    password: Secret | None = None

    @model_validator(mode="before")
    @classmethod
    def _smtps_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tls") == "implicit" and "port" not in data:
            data = data | {"port": 465}
        return data

    @model_validator(mode="after")
    def _login_pair(self) -> SmtpSettings:
        if self.starttls and self.tls == "implicit":
            raise _problem("starttls: true and tls: implicit exclude each other: keep one "
                           "(tls: implicit for port 465, starttls: true for 587 or 25)", "tls")
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise _problem("username and password go together: give both or neither", missing)
        if self.username is not None and not self.starttls and self.tls is None:
            raise _problem("a login is never sent over plain text: add starttls: true, or tls: implicit "
                           "(port 465), or remove username and password", "username")
        return self


class ScheduleSettings(_Strict):
    """When Dagster runs the sync, and on which day it reads everything rather than the last week."""

    cron: Text
    timezone: Text
    full_sync_weekday: Weekday

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        # Dagster's own check, so the loader accepts exactly what the schedule will. Imported
        # here: the clients import this module and should not pay for loading Dagster.
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(
                f"'{value}' is not a cron expression: write minute hour day month weekday, e.g. \"0 21 * * *\""
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not a time zone name such as America/Toronto") from None
        return value

    @field_validator("full_sync_weekday", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class StorageSettings(_Strict):
    """Where the local state lives; the path is made absolute at load."""

    duckdb_path: Path

    @field_validator("duckdb_path")
    @classmethod
    def _absolute(cls, value: Path, info: ValidationInfo) -> Path:
        """Resolve against the folder the loader passes in (else the working directory)."""
        base = (info.context or {}).get("base_dir", Path.cwd())
        return (base / value.expanduser()).resolve()


class SystemsConfig(BaseModel):
    """The two systems alone: all that `discover` needs, the first command a new user runs, before
    any category or storage exists (`load_for_discover`). Unknown top-level keys are ignored."""

    model_config = ConfigDict(frozen=True)

    c2: C2Settings
    hector: HectorSettings
    source: Path


class SyncConfig(SystemsConfig):
    """The whole file. Unknown top-level keys are ignored: the format may grow there (docs/configuration.md)."""

    notify_on_error: Email
    smtp: SmtpSettings
    default_stockroom: Text
    schedule: ScheduleSettings
    storage: StorageSettings
    # A plan printed at the start of a shift can be reviewed and applied in that shift; one from
    # yesterday's scheduled run never is. Older plans are refused at writeback.
    max_plan_age: timedelta = DEFAULT_MAX_PLAN_AGE
    # A read of one side of a category (its listing, page by page) that takes longer is abandoned
    # and the snapshot refused: a server that never ends a listing cannot hold the category's
    # lock for good. Two hours read a million CIs many times over.
    max_read_time: timedelta = DEFAULT_MAX_READ_TIME
    # The Dagster UI that failure e-mails link to (`<dagster_url>/runs/<run_id>`); None: they say how to open it.
    dagster_url: Url | None = None
    cmdbs: list[Text] = Field(min_length=1)
    categories: list[CategoryConfig] = Field(min_length=1)

    @field_validator("max_plan_age", "max_read_time", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        """`6h`, `90m`, `45s`, `2d`: how the file writes a duration."""
        if isinstance(value, str):
            found = DURATION.fullmatch(value.strip())
            if not found:
                raise ValueError(f"'{value}' is not a duration: write a number and a unit, e.g. 6h, 90m or 1d")
            number, unit = found.groups()
            value = timedelta(seconds=float(number) * DURATION_UNITS[unit])
        if isinstance(value, timedelta) and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @model_validator(mode="after")
    def _across_categories(self) -> SyncConfig:
        first_at: dict[str, int] = {}
        for number, category in enumerate(self.categories, start=1):
            if category.key in first_at:
                raise _problem(
                    f"the key is used twice (categories #{first_at[category.key]} and #{number}); "
                    "keys are unique in the file",
                    "key",
                    category.key,
                )
            first_at[category.key] = number
            if category.cmdb not in self.cmdbs:
                raise _problem(
                    f"CMDB '{category.cmdb}' is not in cmdbs ({', '.join(self.cmdbs)}); add it there",
                    "cmdb",
                    category.key,
                )
        _refuse_shared_targets(self.categories)
        return self

    def category(self, key: str) -> CategoryConfig:
        """The category with this key; an unknown key is an operator's mistake, said as such."""
        for category in self.categories:
            if category.key == key:
                return category
        keys = ", ".join(c.key for c in self.categories)
        raise ConfigError(f"is not configured; the keys are: {keys}", file=self.source, category=key)


def _refuse_shared_targets(categories: list[CategoryConfig]) -> None:
    """Two syncing categories on one Hector category, or on one C2 category (CMDB and name),
    would each take the other's items for "no longer listed" and retire them: refused, naming
    both keys. Names compare trimmed and in any case; parked categories (direction: none) sync
    nothing, so they may name anything (the starter file of `discover` parks them all)."""
    first: dict[tuple[str, ...], CategoryConfig] = {}
    for category in categories:
        if category.direction is Direction.NONE:
            continue
        sides = (
            (("hector", category.hector_category.strip().casefold()), "hector_category",
             lambda c: f"Hector category '{c.hector_category.strip()}'"),
            (("c2", category.cmdb.strip().casefold(), category.c2_category.strip().casefold()), "c2_category",
             lambda c: f"C2 category '{c.c2_category.strip()}' of CMDB '{c.cmdb.strip()}'"),
        )
        for identity, field, named in sides:
            other = first.setdefault(identity, category)
            if other is not category:
                raise _problem(
                    f"categories '{other.key}' and '{category.key}' both sync {named(other)}; two categories "
                    "would retire each other's items: map each Hector category (and each C2 category) from one "
                    "category only, or park one (direction: none)",
                    field,
                    category.key,
                )


Loaded = TypeVar("Loaded", bound=SystemsConfig)


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last).
    It parses with libyaml where PyYAML has it (its wheels do): each run reads the file as it
    starts, which PyYAML's own parser makes 10 ms, libyaml 1 ms."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may legitimately be overridden
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key '{key}' is written twice in one mapping", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str] | None = None) -> SyncConfig:
    """Read the configuration: `path`, else $HECTOR_SYNC_CONFIG, else the embedded demo file.

    The demo files are special: their demonstration credentials are put in the environment
    (unless already set), and the embedded file's relative duckdb_path lands in ./.hector-sync,
    because the package folder may be read-only. Any other file's relative duckdb_path is
    relative to the file's own folder (the copy the demo runs is in ./.hector-sync).
    """
    file, data = _read(path)
    return _validate(SyncConfig, file, data)


def load_for_discover(path: str | os.PathLike[str] | None = None) -> SystemsConfig:
    """The file as `discover` reads it: c2 and hector are enough, so a new user lists both
    systems before writing anything else. A file with more than those is checked whole, as
    every other command checks it, and comes back a SyncConfig whose settings a starter file
    carries over."""
    file, data = _read(path)
    whole = any(key in SyncConfig.model_fields and key not in SystemsConfig.model_fields for key in data)
    return _validate(SyncConfig if whole else SystemsConfig, file, data)


def _read(path: str | os.PathLike[str] | None) -> tuple[Path, dict[Any, Any]]:
    """Which file, and its top-level mapping; a demo file's credentials set in the environment."""
    from_env = path is None and bool(os.environ.get(CONFIG_ENV_VAR))
    file = Path(path if path is not None else os.environ.get(CONFIG_ENV_VAR) or DEMO_CONFIG_PATH)
    if is_demo_file(file):
        for name, value in DEMO_ENV.items():
            os.environ.setdefault(name, value)
    return file, _read_yaml(file, from_env)


def _validate(model: type[Loaded], file: Path, data: dict[Any, Any]) -> Loaded:
    is_embedded = file.resolve() == DEMO_CONFIG_PATH.resolve()
    base_dir = Path.cwd() / DEMO_FOLDER if is_embedded else file.resolve().parent
    try:
        return model.model_validate(data | {"source": file.resolve()}, context={"base_dir": base_dir})
    except ValidationError as exc:
        # `from None`: the pydantic error holds the offending input, possibly a secret in clear.
        raise _translate(exc.errors()[0], data, file) from None


def _read_yaml(file: Path, from_env: bool) -> dict[Any, Any]:
    """The file's top-level mapping, or a ConfigError with the line of a YAML mistake."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        hint = f" (the path comes from {CONFIG_ENV_VAR})" if from_env else ""
        raise ConfigError(f"cannot be read: {exc.strerror or exc}{hint}", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot be read: it is not UTF-8 text", file=file) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: the YAML snippet could show a secret in clear.
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"is not valid YAML{at}: {exc.problem or exc.context}", file=file) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"is not valid YAML: {exc}", file=file) from None
    if not isinstance(data, dict):
        raise ConfigError("should be a YAML mapping of sections (c2:, hector:, ..., categories:)", file=file)
    return data


def _translate(error: ErrorDetails, data: dict[Any, Any], file: Path) -> ConfigError:
    """Turn pydantic's first error into our sentence: where in the file, then what is wrong."""
    ctx = error.get("ctx", {})
    loc = [*error["loc"], *([ctx["field"]] if "field" in ctx else [])]
    category, section = ctx.get("category"), None
    if len(loc) > 1 and loc[0] == "categories" and isinstance(loc[1], int):
        category, loc = _category_label(data, loc[1]), loc[2:]
    elif loc and not category:
        section, loc = str(loc[0]), loc[1:]
    field = ".".join(str(part) for part in loc) or None
    message = _message(error)
    if error["type"] == "missing" and section and not loc and section not in SystemsConfig.model_fields:
        message += " (`discover` alone runs on a file with only the c2 and hector sections)"
    return ConfigError(message, file=file, category=category, section=section, field=field)


def _category_label(data: dict[Any, Any], index: int) -> str:
    """The category's key as written, or its position when it has no usable key."""
    entry = data["categories"][index]
    key = entry.get("key") if isinstance(entry, dict) else None
    return key if isinstance(key, str) and key else f"#{index + 1}"


def _message(error: ErrorDetails) -> str:
    """What is wrong, in words; never pydantic's input echo, which may be a secret."""
    kind = error["type"]
    if kind == _PROBLEM:
        return error["ctx"]["message"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "missing":
        return "required, but missing from the file"
    if kind in ("model_type", "dict_type"):
        return "should be a mapping (key: value lines)"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    return error["msg"].removeprefix("Input ")
