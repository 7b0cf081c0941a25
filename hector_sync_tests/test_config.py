"""The configuration loader: the spec's example and the demo load; every refusal is one clear line."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hector_sync.config import (
    CONFIG_ENV_VAR,
    ConfigError,
    Direction,
    FieldMap,
    IdentifyBy,
    Secret,
    SyncConfig,
    SystemsConfig,
    load_config,
    load_for_discover,
)
from hector_sync.demo import (
    DEMO_C2_PASSWORD,
    DEMO_C2_PORT,
    DEMO_COPY_NAME,
    DEMO_ENV,
    DEMO_FOLDER,
    DEMO_HECTOR_API_KEY,
    DEMO_HECTOR_PORT,
    write_demo_copy,
)

# The contract's example configuration file, verbatim (docs/configuration.md, "Example"): a file
# written to the contract loads.
SPEC_EXAMPLE = """\
c2:
  url: https://acme.c2atom.example          # "the address of your environment"
  username: svc-hector                       # the read/write service account
  password: {env: C2_PASSWORD}
hector:
  url: https://acme.hector.example
  api_key: {env: HECTOR_API_KEY}
notify_on_error: it-ops@acme.example         # gets the details of every failed sync
smtp:                                        # how that e-mail is sent
  host: localhost
  port: 25
  sender: hector-sync@acme.example
  starttls: false                            # optional; username/password {env: ...} optional
default_stockroom: Main warehouse            # new assets are created here
schedule:
  cron: "0 21 * * *"                         # Hector's own integrations run daily from 9 pm
  timezone: America/Toronto
  full_sync_weekday: friday                  # other days: only CIs/assets changed in the last 7 days
storage:
  duckdb_path: data/hector_sync.duckdb       # relative to the config file's folder
cmdbs: [Production]                          # the CMDBs chosen after "Load CMDB"
categories:                                  # one entry per C2 category to link
  - key: printers                            # stable id: the Dagster partition key
    cmdb: Production
    c2_category: Printers
    hector_category: Printers
    direction: c2_to_hector                  # none | c2_to_hector | hector_to_c2 | per_field
    model:                                   # Hector subcategory field: C2 field
      maker: Manufacturer                    # maker, model and description are required
      model: Model
      description: Model
      price: Cost                            # note, price, weight, vendor_sku optional
    model_attributes: {}                     # Hector subcategory attribute: C2 field
    asset:                                   # Hector asset field: C2 field
      title: Name                            # "Name" is the CI's own name
      asset_tag: AssetTag                    # note and the five dates optional
      acquisition_date: PurchaseDate
    asset_attributes:                        # Hector asset attribute: C2 field
      Serial number: SerialNumber
    identify_by:                             # optional: how an unlinked CI and asset are matched
      c2: SerialNumber
      hector: Serial number
    on_missing: ignore                       # ignore | retire: CI gone or retired in C2
"""

# Recognisable values: if one of these ever shows up in a repr or an error, a secret leaked.
C2_SECRET = "C2-SECRET-VALUE-7f3a"
HECTOR_SECRET = "HECTOR-SECRET-VALUE-9b1c"
SMTP_SECRET = "SMTP-SECRET-VALUE-2d4e"
DELETE = object()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No config path from the caller's shell; demo variables the loader sets are undone after."""
    for name in (CONFIG_ENV_VAR, *DEMO_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("C2_PASSWORD", C2_SECRET)
    monkeypatch.setenv("HECTOR_API_KEY", HECTOR_SECRET)
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_SECRET)


def spec_doc() -> dict[str, Any]:
    return yaml.safe_load(SPEC_EXAMPLE)


def write(folder: Path, doc: dict[str, Any] | str, name: str = "hector_sync.yaml") -> Path:
    """Write a configuration (a document or raw YAML text) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """The spec's example with `changes` applied; a key is a dotted path, list indices as numbers."""
    doc = spec_doc()
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return doc


def long_form(c2: str, direction: str) -> dict[str, str]:
    return {"c2": c2, "direction": direction}


def assert_refused(path: Path, where: str, field: str | None, fragment: str) -> ConfigError:
    """Load must fail with one human line naming the file, `where` and the field."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    text = str(error)
    assert text.startswith(f"{path}: {where}"), text
    if field is not None:
        assert f"field '{field}'" in text, text
    assert fragment in text, text
    assert "\n" not in text
    for noise in ("pydantic", "validation error", "For further information", "input_value"):
        assert noise not in text, text
    for secret in (C2_SECRET, HECTOR_SECRET, SMTP_SECRET):
        assert secret not in text
    assert error.__cause__ is None and error.__suppress_context__
    assert error.file == path
    assert error.field == field
    return error


def test_spec_example_loads_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    config = load_config(path)

    assert config.source == path.resolve()
    assert config.c2.url == "https://acme.c2atom.example"
    assert config.c2.username == "svc-hector"
    assert config.c2.password == Secret(env="C2_PASSWORD")
    assert config.c2.password.reveal() == C2_SECRET
    assert config.c2.verify_tls and config.hector.verify_tls
    assert config.hector.api_key.reveal() == HECTOR_SECRET
    assert config.notify_on_error == "it-ops@acme.example"
    smtp = config.smtp
    assert (smtp.host, smtp.port, smtp.sender) == ("localhost", 25, "hector-sync@acme.example")
    assert smtp.starttls is False
    assert smtp.username is None and smtp.password is None
    assert config.default_stockroom == "Main warehouse"
    schedule = config.schedule
    assert (schedule.cron, schedule.timezone, schedule.full_sync_weekday) == (
        "0 21 * * *",
        "America/Toronto",
        "friday",
    )
    assert config.storage.duckdb_path == (tmp_path / "data" / "hector_sync.duckdb").resolve()
    assert config.cmdbs == ["Production"]

    printers = config.category("printers")
    assert (printers.cmdb, printers.c2_category, printers.hector_category) == ("Production", "Printers", "Printers")
    assert printers.direction is Direction.C2_TO_HECTOR
    flows = Direction.C2_TO_HECTOR
    assert printers.model == {
        "maker": FieldMap(c2="Manufacturer", direction=flows),
        "model": FieldMap(c2="Model", direction=flows),
        "description": FieldMap(c2="Model", direction=flows),
        "price": FieldMap(c2="Cost", direction=flows),
    }
    assert printers.model_attributes == {}
    assert printers.asset == {
        "title": FieldMap(c2="Name", direction=flows),
        "asset_tag": FieldMap(c2="AssetTag", direction=flows),
        "acquisition_date": FieldMap(c2="PurchaseDate", direction=flows),
    }
    assert printers.asset_attributes == {"Serial number": FieldMap(c2="SerialNumber", direction=flows)}
    assert printers.identify_by == IdentifyBy(c2="SerialNumber", hector="Serial number")
    assert printers.on_missing == "ignore"
    assert printers.max_change_fraction == 0.2


def test_demo_config_is_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()

    assert config.c2.url == f"http://127.0.0.1:{DEMO_C2_PORT}"
    assert config.hector.url == f"http://127.0.0.1:{DEMO_HECTOR_PORT}"
    assert config.c2.password.reveal() == DEMO_C2_PASSWORD
    assert config.hector.api_key.reveal() == DEMO_HECTOR_API_KEY
    assert config.storage.duckdb_path == (tmp_path / ".hector-sync" / "hector_sync.duckdb").resolve()
    directions = {c.key: c.direction for c in config.categories}
    assert directions == {
        "printers": Direction.C2_TO_HECTOR,
        "laptops": Direction.C2_TO_HECTOR,
        "monitors": Direction.C2_TO_HECTOR,
        "phones": Direction.NONE,
        "servers": Direction.NONE,
    }
    assert config.category("laptops").identify_by == IdentifyBy(c2="SerialNumber", hector="Serial number")
    assert config.category("monitors").asset_attributes["Owner"].c2 == "Owner"


def test_demo_credentials_do_not_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HECTOR_SYNC_DEMO_C2_PASSWORD", "set-by-operator")
    assert load_config().c2.password.reveal() == "set-by-operator"


def test_demo_credentials_are_only_set_for_the_demo_file(tmp_path: Path) -> None:
    doc = changed({"c2.password": {"env": "HECTOR_SYNC_DEMO_C2_PASSWORD"}})
    config = load_config(write(tmp_path, doc))
    with pytest.raises(ConfigError, match="HECTOR_SYNC_DEMO_C2_PASSWORD is not set"):
        config.c2.password.reveal()


def test_the_demo_copy_is_the_embedded_file_with_its_simulators_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `hector-sync demo` runs when its simulators took other ports; its credentials are
    the demo's, and its database is the embedded file's, in ./.hector-sync."""
    monkeypatch.chdir(tmp_path)
    copy = write_demo_copy("http://127.0.0.1:40001", "http://127.0.0.1:40002")

    assert copy == tmp_path / DEMO_FOLDER / DEMO_COPY_NAME
    config, embedded = load_config(copy), load_config()
    assert (config.c2.url, config.hector.url) == ("http://127.0.0.1:40001", "http://127.0.0.1:40002")
    assert config.c2.password.reveal() == DEMO_C2_PASSWORD
    unchanged = {"c2": {"url"}, "hector": {"url"}, "source": True}
    assert config.model_dump(exclude=unchanged) == embedded.model_dump(exclude=unchanged)


def test_discover_needs_only_the_two_systems(tmp_path: Path) -> None:
    doc = spec_doc()
    systems = write(tmp_path, {"c2": doc["c2"], "hector": doc["hector"]})

    config = load_for_discover(systems)
    assert type(config) is SystemsConfig and config.c2.url == "https://acme.c2atom.example"
    assert isinstance(load_for_discover(write(tmp_path, SPEC_EXAMPLE, "whole.yaml")), SyncConfig)
    # every other command needs the rest, and says which section is missing
    assert_refused(systems, "section 'notify_on_error'", None,
                   "required, but missing from the file (`discover` alone runs on a file with only the c2 "
                   "and hector sections)")


def test_discover_checks_whole_a_file_with_more_than_the_two_systems(tmp_path: Path) -> None:
    """A section beyond c2 and hector means a configuration in the writing: all of it is checked."""
    doc = spec_doc()
    path = write(tmp_path, {"c2": doc["c2"], "hector": doc["hector"], "storage": doc["storage"]})
    with pytest.raises(ConfigError, match="section 'notify_on_error': required, but missing"):
        load_for_discover(path)


def test_hector_sync_config_variable_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = write(tmp_path / "env", SPEC_EXAMPLE)
    monkeypatch.setenv(CONFIG_ENV_VAR, str(from_env))
    assert load_config().source == from_env.resolve()

    explicit = write(tmp_path / "explicit", SPEC_EXAMPLE)
    assert load_config(explicit).source == explicit.resolve()  # an explicit path comes first


def test_a_missing_file_says_where_its_path_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.setenv(CONFIG_ENV_VAR, str(missing))
    with pytest.raises(ConfigError, match=f"cannot be read: .*{CONFIG_ENV_VAR}") as caught:
        load_config()
    assert str(caught.value).startswith(str(missing))


def test_relative_duckdb_path_is_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf") / write(tmp_path / "conf", SPEC_EXAMPLE).name)
    assert config.storage.duckdb_path == (tmp_path / "conf" / "data" / "hector_sync.duckdb").resolve()
    assert config.storage.duckdb_path.is_absolute()

    absolute = tmp_path / "elsewhere" / "state.duckdb"
    config = load_config(write(tmp_path / "conf", changed({"storage.duckdb_path": str(absolute)})))
    assert config.storage.duckdb_path == absolute.resolve()


def test_short_form_and_long_form_mean_the_same(tmp_path: Path) -> None:
    short = load_config(write(tmp_path / "short", SPEC_EXAMPLE)).category("printers")
    long = load_config(
        write(
            tmp_path / "long",
            changed(
                {
                    "categories.0.model.maker": {"c2": "Manufacturer"},
                    "categories.0.model.model": long_form("Model", "c2_to_hector"),
                }
            ),
        )
    ).category("printers")
    assert long == short


def test_per_field_takes_each_field_s_own_direction(tmp_path: Path) -> None:
    doc = changed(
        {
            "categories.0.direction": "per_field",
            "categories.0.model": {
                "maker": long_form("Manufacturer", "c2_to_hector"),
                "model": long_form("Model", "c2_to_hector"),
                "description": long_form("Description", "c2_to_hector"),
            },
            "categories.0.asset": {"title": long_form("Name", "hector_to_c2")},
            "categories.0.asset_attributes": {"Serial number": long_form("SerialNumber", "c2_to_hector")},
        }
    )
    printers = load_config(write(tmp_path, doc)).category("printers")
    assert printers.direction is Direction.PER_FIELD
    assert printers.asset["title"] == FieldMap(c2="Name", direction=Direction.HECTOR_TO_C2)
    assert printers.model["maker"].direction is Direction.C2_TO_HECTOR


def test_a_parked_category_may_be_half_written(tmp_path: Path) -> None:
    doc = changed({"categories.0.direction": "none", "categories.0.model": {}, "categories.0.asset": None})
    printers = load_config(write(tmp_path, doc)).category("printers")
    assert printers.direction is Direction.NONE
    assert printers.model == {} and printers.asset == {}
    assert printers.asset_attributes["Serial number"].direction is Direction.NONE


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"schedule.full_sync_weekday": "Friday"}, "friday"),
        ({"schedule.full_sync_weekday": "SUNDAY"}, "sunday"),
    ],
)
def test_weekday_is_case_insensitive(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    assert load_config(write(tmp_path, changed(changes))).schedule.full_sync_weekday == expected


def test_extra_top_level_keys_are_ignored(tmp_path: Path) -> None:
    doc = changed({"x_team_notes": {"owner": "it-ops"}})
    assert load_config(write(tmp_path, doc)).category("printers").key == "printers"


PRINTERS = "category 'printers'"
# per_field refuses the short form, so these cases keep only the (long-hand) model mappings.
PER_FIELD_MODEL_ONLY = {
    "categories.0.direction": "per_field",
    "categories.0.asset": {},
    "categories.0.asset_attributes": {},
}
REFUSALS = [
    pytest.param({"categories.0.model.maker": DELETE}, PRINTERS, "model.maker",
                 "select at least one field for the Maker — maker, model and description", id="maker-missing"),
    pytest.param({"categories.0.model.model": DELETE}, PRINTERS, "model.model",
                 "select at least one field for the Model", id="model-missing"),
    pytest.param({"categories.0.model.description": DELETE}, PRINTERS, "model.description",
                 "select at least one field for the Description", id="description-missing"),
    pytest.param({"categories.0.asset.colour": "Colour"}, PRINTERS, "asset.colour",
                 "'colour' is not a Hector asset field; use one of: title, asset_tag", id="unknown-asset-field"),
    pytest.param({"categories.0.model.colour": "Colour"}, PRINTERS, "model.colour",
                 "'colour' is not a Hector subcategory field", id="unknown-subcategory-field"),
    pytest.param({"categories.0.direction": "both_ways"}, PRINTERS, "direction",
                 "should be 'none', 'c2_to_hector', 'hector_to_c2' or 'per_field'", id="unknown-direction"),
    pytest.param({"categories": spec_doc()["categories"] * 2}, PRINTERS, "key",
                 "the key is used twice (categories #1 and #2)", id="duplicate-key"),
    pytest.param({"categories.0.key": "Printers"}, "category 'Printers'", "key",
                 "'Printers' is not a valid key: use lower-case letters, digits, - and _", id="bad-key-syntax"),
    pytest.param({"categories.0.key": DELETE}, "category '#1'", "key",
                 "required, but missing", id="key-missing"),
    pytest.param({"categories.0.direction": "per_field"}, PRINTERS, "model.maker",
                 "the short form is refused under direction: per_field", id="short-form-under-per-field"),
    pytest.param(PER_FIELD_MODEL_ONLY | {
                     "categories.0.model": {"maker": long_form("Manufacturer", "c2_to_hector"),
                                            "model": long_form("Model", "c2_to_hector"),
                                            "description": long_form("Description", "hector_to_c2")}},
                 PRINTERS, "model.description.direction",
                 "maker, model and description must all flow the same way", id="per-field-split-model-flow"),
    pytest.param(PER_FIELD_MODEL_ONLY | {"categories.0.model": {"maker": {"c2": "Manufacturer"}}},
                 PRINTERS, "model.maker.direction", "required, but missing", id="per-field-without-direction"),
    pytest.param({"categories.0.model.maker": long_form("Manufacturer", "hector_to_c2")}, PRINTERS,
                 "model.maker.direction", "only per_field categories give fields their own direction",
                 id="field-direction-differs"),
    pytest.param({"categories.0.direction": "hector_to_c2"}, PRINTERS, "model.description",
                 "C2 field 'Model' is already written from model.model", id="two-fields-write-one-c2-field"),
    pytest.param({"c2.password": C2_SECRET}, "section 'c2'", "password",
                 "a secret is never written in the file: write {env: VARIABLE}", id="c2-password-in-clear"),
    pytest.param({"hector.api_key": HECTOR_SECRET}, "section 'hector'", "api_key",
                 "a secret is never written in the file", id="api-key-in-clear"),
    pytest.param({"smtp.username": "mailer", "smtp.password": SMTP_SECRET}, "section 'smtp'", "password",
                 "a secret is never written in the file", id="smtp-password-in-clear"),
    pytest.param({"c2.password": 1234567}, "section 'c2'", "password",
                 "a secret is never written in the file", id="numeric-password-in-clear"),
    pytest.param({"c2.password": {"env": SMTP_SECRET + " x"}}, "section 'c2'", "password.env",
                 "env must name an environment variable", id="secret-variable-name"),
    pytest.param({"smtp.username": "mailer"}, "section 'smtp'", "password",
                 "username and password go together", id="smtp-login-half-given"),
    pytest.param({"categories.0.cmdb": "Lab"}, PRINTERS, "cmdb",
                 "CMDB 'Lab' is not in cmdbs (Production); add it there", id="cmdb-not-listed"),
    pytest.param({"c2": DELETE}, "section 'c2'", None, "required, but missing", id="c2-section-missing"),
    pytest.param({"smtp": DELETE}, "section 'smtp'", None, "required, but missing", id="smtp-section-missing"),
    pytest.param({"categories": DELETE}, "section 'categories'", None, "required", id="categories-missing"),
    pytest.param({"categories": []}, "section 'categories'", None, "must not be empty", id="no-category"),
    pytest.param({"storage": "somewhere"}, "section 'storage'", None,
                 "should be a mapping", id="section-not-a-mapping"),
    pytest.param({"categories.0.on_missing": "delete"}, PRINTERS, "on_missing",
                 "should be 'ignore' or 'retire'", id="unknown-on-missing"),
    pytest.param({"categories.0.max_change_fraction": 0}, PRINTERS, "max_change_fraction",
                 "is not a fraction above 0 and at most 1", id="fraction-zero"),
    pytest.param({"categories.0.max_change_fraction": 1.5}, PRINTERS, "max_change_fraction",
                 "is not a fraction above 0 and at most 1", id="fraction-above-one"),
    pytest.param({"categories.0.identify-by": {"c2": "SerialNumber"}}, PRINTERS, "identify-by",
                 "unknown key; the keys here are: key, cmdb", id="misspelt-category-key"),
    pytest.param({"c2.pasword": {"env": "C2_PASSWORD"}}, "section 'c2'", "pasword",
                 "unknown key; the keys here are: url, username, password, verify_tls", id="misspelt-section-key"),
    pytest.param({"categories.0.asset.title": 12}, PRINTERS, "asset.title",
                 "write a C2 field name, or {c2: FIELD, direction: DIRECTION}", id="mapping-not-a-name"),
    pytest.param({"schedule.cron": "0 21 * *"}, "section 'schedule'", "cron",
                 "'0 21 * *' is not a cron expression", id="bad-cron"),
    pytest.param({"schedule.timezone": "America/Torontoo"}, "section 'schedule'", "timezone",
                 "'America/Torontoo' is not a time zone name", id="bad-timezone"),
    pytest.param({"schedule.full_sync_weekday": "fri"}, "section 'schedule'", "full_sync_weekday",
                 "should be 'monday', 'tuesday'", id="bad-weekday"),
    pytest.param({"c2.url": "acme.c2atom.example"}, "section 'c2'", "url",
                 "is not an http:// or https:// address", id="bad-url"),
    pytest.param({"c2.url": f"https://svc-hector:{C2_SECRET}@acme.c2atom.example"}, "section 'c2'", "url",
                 "must not contain credentials", id="credentials-in-url"),
    pytest.param({"notify_on_error": "it-ops"}, "section 'notify_on_error'", None,
                 "'it-ops' is not an e-mail address", id="bad-notify-address"),
    pytest.param({"smtp.port": "smtp"}, "section 'smtp'", "port", "should be a valid integer", id="bad-port"),
]


def test_rate_limits_are_optional_calls_per_second(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert config.c2.rate_limit_per_s is None and config.hector.rate_limit_per_s is None
    config = load_config(write(tmp_path, changed({"c2.rate_limit_per_s": 20, "hector.rate_limit_per_s": 2.5})))
    assert (config.c2.rate_limit_per_s, config.hector.rate_limit_per_s) == (20, 2.5)


@pytest.mark.parametrize(
    ("section", "value", "fragment"),
    [
        pytest.param("hector", 0, "0 is not a number of calls per second above 0, e.g. 20", id="zero"),
        pytest.param("c2", -5, "-5 is not a number of calls per second above 0", id="negative"),
        pytest.param("hector", float("inf"), "inf is not a number of calls per second", id="infinite"),
        pytest.param("c2", True, "should be a valid number", id="yes"),
    ],
)
def test_a_rate_limit_must_be_above_zero(tmp_path: Path, section: str, value: Any, fragment: str) -> None:
    path = write(tmp_path, changed({f"{section}.rate_limit_per_s": value}))  # infinity is written .inf
    assert_refused(path, f"section '{section}'", "rate_limit_per_s", fragment)


def test_max_plan_age_and_max_read_time_are_durations_with_a_unit(tmp_path: Path) -> None:
    defaults = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert (defaults.max_plan_age, defaults.max_read_time) == (timedelta(hours=6), timedelta(hours=2))
    for text, expected in (("90m", timedelta(minutes=90)), ("1d", timedelta(days=1)), ("45s", timedelta(seconds=45))):
        config = load_config(write(tmp_path, changed({"max_plan_age": text, "max_read_time": text})))
        assert (config.max_plan_age, config.max_read_time) == (expected, expected)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("6 hours", "'6 hours' is not a duration: write a number and a unit, e.g. 6h, 90m or 1d", id="words"),
        pytest.param("0h", "must be longer than zero", id="zero"),
    ],
)
@pytest.mark.parametrize("setting", ["max_plan_age", "max_read_time"])
def test_a_wrong_duration_is_one_line(tmp_path: Path, value: str, fragment: str, setting: str) -> None:
    assert_refused(write(tmp_path, changed({setting: value})), f"section '{setting}'", None, fragment)


@pytest.mark.parametrize(("changes", "where", "field", "fragment"), REFUSALS)
def test_loader_refusals_are_one_precise_line(
    tmp_path: Path, changes: dict[str, Any], where: str, field: str | None, fragment: str
) -> None:
    assert_refused(write(tmp_path, changed(changes)), where, field, fragment)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(SPEC_EXAMPLE.replace("  username: svc-hector", " username: svc-hector"),
                     "is not valid YAML at line 3", id="bad-indentation"),
        pytest.param(SPEC_EXAMPLE.replace("      model: Model\n", "      model: Model\n      maker: Brand\n"),
                     "is not valid YAML at line 31, column 7: the key 'maker' is written twice",
                     id="duplicate-yaml-key"),
        pytest.param("", "should be a YAML mapping of sections", id="empty-file"),
    ],
)
def test_yaml_mistakes_name_the_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {fragment}"), str(caught.value)


def test_an_unknown_category_key_lists_the_valid_ones(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    with pytest.raises(ConfigError) as caught:
        config.category("scanners")
    assert str(caught.value) == f"{config.source}: category 'scanners': is not configured; the keys are: printers"


def test_no_secret_value_is_ever_printed(tmp_path: Path) -> None:
    doc = changed({"smtp.starttls": True, "smtp.username": "mailer", "smtp.password": {"env": "SMTP_PASSWORD"}})
    config = load_config(write(tmp_path, doc))
    shown = [repr(config), str(config), repr(config.c2), str(config.hector), repr(config.smtp)]
    shown += [repr(config.c2.password), str(config.smtp.password), config.model_dump_json()]
    for secret in (C2_SECRET, HECTOR_SECRET, SMTP_SECRET):
        assert not any(secret in text for text in shown)
    assert str(config.c2.password) == repr(config.c2.password) == "{env: C2_PASSWORD}"
    assert config.smtp.password is not None and config.smtp.password.reveal() == SMTP_SECRET


def test_an_unset_secret_names_the_variable_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    monkeypatch.delenv("HECTOR_API_KEY")
    with pytest.raises(ConfigError, match="environment variable HECTOR_API_KEY is not set") as caught:
        config.hector.api_key.reveal()
    assert HECTOR_SECRET not in str(caught.value) and C2_SECRET not in str(caught.value)


def test_the_loaded_configuration_is_immutable(tmp_path: Path) -> None:
    config: SyncConfig = load_config(write(tmp_path, SPEC_EXAMPLE))
    with pytest.raises(ValueError, match="frozen"):
        config.category("printers").direction = Direction.NONE  # type: ignore[misc]
    assert copy.deepcopy(config) == config


@pytest.mark.parametrize(
    ("section", "url"),
    [
        pytest.param("c2", "http://acme.c2atom.example", id="c2"),
        pytest.param("hector", "http://acme.hector.example:8080/", id="hector"),
        pytest.param("c2", "HTTP://acme.c2atom.example", id="upper-case-scheme"),
    ],
)
def test_a_plain_http_url_needs_allow_insecure_http(tmp_path: Path, section: str, url: str) -> None:
    """Plain HTTP sends the password, the tokens and the API key readable by anyone on the path:
    refused at load unless the section says allow_insecure_http: true (off by default)."""
    refused = write(tmp_path, changed({f"{section}.url": url}))
    assert_refused(refused, f"section '{section}'", "url",
                   f"is a plain http:// address, which sends the credentials unencrypted: use https://, "
                   f"or set allow_insecure_http: true in section '{section}' (a test server only)")

    allowed = load_config(write(tmp_path, changed({f"{section}.url": url, f"{section}.allow_insecure_http": True}),
                                name="allowed.yaml"))
    settings = getattr(allowed, section)
    assert settings.url.lower() == url.lower().rstrip("/") and settings.allow_insecure_http is True
    other = "hector" if section == "c2" else "c2"
    assert getattr(allowed, other).allow_insecure_http is False  # the default, and https needs nothing

    assert_refused(write(tmp_path, changed({f"{section}.url": url, f"{section}.allow_insecure_http": False}),
                         name="explicitly-off.yaml"), f"section '{section}'", "url", "allow_insecure_http: true")


def test_a_secret_is_read_without_surrounding_whitespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kubectl create secret --from-file` and `echo >` leave a newline at the end of the value."""
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    monkeypatch.setenv("HECTOR_API_KEY", f"{HECTOR_SECRET}\n")
    monkeypatch.setenv("C2_PASSWORD", f"  {C2_SECRET}\r\n")
    assert config.hector.api_key.reveal() == HECTOR_SECRET
    assert config.c2.password.reveal() == C2_SECRET
    monkeypatch.setenv("HECTOR_API_KEY", " \n")
    with pytest.raises(ConfigError, match="environment variable HECTOR_API_KEY is not set or empty"):
        config.hector.api_key.reveal()


@pytest.mark.parametrize("inside", ["\r\nX-Evil: 1", "\n", "\x1b", "\t", "\x7f", "\x85"],
                         ids=["header-injection", "newline", "escape", "tab", "del", "c1-control"])
def test_a_secret_with_a_control_character_inside_names_the_variable_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: str
) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    monkeypatch.setenv("HECTOR_API_KEY", f"{HECTOR_SECRET}{inside}{HECTOR_SECRET[::-1]}\n")
    with pytest.raises(ConfigError) as caught:
        config.hector.api_key.reveal()
    text = str(caught.value)
    assert text == (
        "the environment variable HECTOR_API_KEY holds a line break or another control character inside "
        "its value, which cannot be sent in an HTTP header; set it to the secret alone, on one line "
        "({env: HECTOR_API_KEY})"
    )
    assert HECTOR_SECRET not in text and HECTOR_SECRET[::-1] not in text and "Evil" not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None
