"""`hector-sync discover` (docs/configuration.md, "Commands").

The configuration speaks in names that only the live systems know. `discover` is the seed
product's "Load CMDB" + "Load categories": it shows every name the file may use and can write a
starter file, so that no name has to be typed by hand. `hector-sync validate`
(`hector_sync.validation`) then proves that every name the file uses still exists.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from hector_sync.c2 import C2Category, C2Client, C2Cmdb, C2Field
from hector_sync.config import REQUIRED_MODEL_FIELDS, Direction, SyncConfig, SystemsConfig
from hector_sync.errors import ApiError
from hector_sync.hector import HectorAttribute, HectorCategory, HectorClient, HectorStockroom
from hector_sync.reconcile.mapping import NAME_PSEUDO_FIELD

# Hector field -> C2 field names (compared by `_norm`) that obviously mean it, best first.
MODEL_GUESSES: dict[str, tuple[str, ...]] = {
    "maker": ("manufacturer", "maker", "make", "brand"),
    "model": ("model", "modelname", "modelnumber"),
    "description": ("description",),
    "price": ("cost", "price", "purchaseprice"),
    "weight": ("weight",),
    "vendor_sku": ("vendorsku", "sku", "partnumber"),
}
ASSET_GUESSES: dict[str, tuple[str, ...]] = {
    "asset_tag": ("assettag", "tag", "inventorytag"),
    "note": ("note", "notes", "comments"),
    "acquisition_date": ("purchasedate", "acquisitiondate", "acquired"),
    "assigned_date": ("assigneddate",),
    "return_date": ("returndate",),
    "maintenance_date": ("maintenancedate", "lastmaintenance"),
    "end_of_life_date": ("endoflifedate", "endoflife", "eoldate"),
}
SERIAL_ATTRIBUTE = "Serial number"  # where any C2 field named Serial... goes, if Hector has it
# What a starter written from a file with only c2 and hector says for the rest: values that load,
# for the operator to make their own before switching a category on.
PLACEHOLDER_NOTIFY: dict[str, Any] = {
    "notify_on_error": "it-ops@example.org",
    "smtp": {"host": "localhost", "port": 25, "sender": "hector-sync@example.org"},
}
PLACEHOLDER_SCHEDULE = {"cron": "0 21 * * *", "timezone": "UTC", "full_sync_weekday": "friday"}
PLACEHOLDER_STORAGE = {"duckdb_path": "hector_sync.duckdb"}  # relative: beside the starter file


# ---------------------------------------------------------------------------------------------
# What both systems hold


@dataclass(frozen=True)
class C2CategoryFields:
    """One C2 category, with the CMDB it belongs to and its fields."""

    cmdb: C2Cmdb
    category: C2Category
    fields: list[C2Field]


@dataclass(frozen=True)
class Inventory:
    """Every name the configuration may use, as the two systems list them."""

    cmdbs: list[C2Cmdb]
    categories: list[C2CategoryFields]
    hector_categories: list[HectorCategory]
    attributes: list[HectorAttribute]
    stockrooms: list[HectorStockroom]


def read_inventory(config: SystemsConfig) -> Inventory:
    """Read the lists of both systems (raises ApiError, or ConfigError for an unset secret)."""
    c2 = C2Client.from_settings(config.c2)
    hector = HectorClient.from_settings(config.hector)
    with c2, hector:
        cmdbs = c2.list_cmdbs()
        categories = [
            C2CategoryFields(cmdb, category, c2.list_fields(cmdb.id, category.id))
            for cmdb in cmdbs
            for category in c2.list_categories(cmdb.id)
        ]
        return Inventory(
            cmdbs, categories, hector.list_categories(), hector.list_attributes(), hector.list_stockrooms()
        )


# ---------------------------------------------------------------------------------------------
# discover


def discover(config: SystemsConfig, write_config: str | None) -> int:
    """Print what both systems hold; with `write_config`, also write a starter configuration.

    Exit status: 0 done, 1 a system failed (its message is printed), 2 the file already exists
    or cannot be written.
    """
    target = Path(write_config) if write_config is not None else None
    if target is not None and target.exists():  # checked first: no point reading both systems
        print(f"hector-sync: {target} already exists; refusing to overwrite it", file=sys.stderr)
        return 2
    try:
        inventory = read_inventory(config)
    except ApiError as failed:
        print(f"hector-sync: {failed}", file=sys.stderr)
        return 1
    print(inventory_tables(config, inventory))
    if target is None:
        print("\nTo start a configuration from these names: hector-sync discover --write-config FILE")
        return 0
    if not inventory.categories:
        print("hector-sync: C2 ITSM lists no category, so there is no configuration to start", file=sys.stderr)
        return 1
    try:
        with target.open("x", encoding="utf-8") as out:
            out.write(starter_config(config, inventory, target))
    except OSError as failed:
        print(f"hector-sync: cannot write {target}: {failed.strerror or failed}", file=sys.stderr)
        return 2
    print(
        f"\nWrote {target}: {len(inventory.categories)} categories, all direction: none. "
        f"Fill in the mappings and directions, then run: hector-sync --config {target} validate"
    )
    return 0


def _width(text: str) -> int:
    """Terminal columns of the text: East Asian wide characters (a Tokyo stockroom) take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns, under its title."""
    cells = [list(headers), ["-" * len(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = [title] + [
        "  " + "  ".join(cell + " " * (width - _width(cell)) for cell, width in zip(row, widths)).rstrip()
        for row in cells
    ]
    return "\n".join(lines if rows else [*lines, "  (none)"])


def inventory_tables(config: SystemsConfig, inventory: Inventory) -> str:
    """Both systems' lists as tables: C2's CMDBs, categories and fields, then Hector's lists."""
    blocks = [table(f"C2 ITSM ({config.c2.url}): CMDBs", ("id", "name"), [(c.id, c.name) for c in inventory.cmdbs])]
    for cmdb in inventory.cmdbs:
        linked = [c for c in inventory.categories if c.cmdb.id == cmdb.id]
        blocks.append(
            table(f"Categories of CMDB {cmdb.name}", ("id", "name"), [(c.category.id, c.category.name) for c in linked])
        )
        blocks += [
            table(
                f"Fields of {cmdb.name} / {c.category.name}",
                ("name", "type", "required"),
                [(f.name, f.type, "yes" if f.required else "no") for f in c.fields],
            )
            for c in linked
        ]
    blocks.append(f'Every C2 category also offers "{NAME_PSEUDO_FIELD}", the CI\'s own name.')
    blocks.append(
        table(
            f"Hector ({config.hector.url}): categories (only serialized ones sync)",
            ("id", "name", "type"),
            [(c.id, c.name, c.type) for c in inventory.hector_categories],
        )
    )
    blocks.append(
        table("Hector attributes", ("name", "scope", "type"), [(a.name, a.scope, a.type) for a in inventory.attributes])
    )
    blocks.append(table("Hector stockrooms", ("id", "name"), [(s.id, s.name) for s in inventory.stockrooms]))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# The starter configuration


def _norm(name: str) -> str:
    """A name reduced for matching: "Serial number", "SerialNumber" and "serial_number" agree."""
    return re.sub(r"[^a-z0-9]", "", name.casefold())


def category_key(name: str, taken: set[str]) -> str:
    """A partition key from a category name: lower-case ASCII `[a-z0-9_-]`, unique in `taken`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9_-]+", "_", ascii_name.lower()).strip("_-") or "category"
    key, number = base, 1
    while key in taken:
        number += 1
        key = f"{base}_{number}"
    taken.add(key)
    return key


def guess_mappings(fields: Sequence[C2Field], attributes: Sequence[HectorAttribute]) -> dict[str, dict[str, str]]:
    """The four mapping sections, pre-filled where a C2 field name obviously matches.

    Each C2 field is used at most once: Hector's own fields first, then attributes of the same
    name (any C2 field named Serial... goes to the serial number attribute).
    """
    by_norm: dict[str, str] = {}
    for c2_field in fields:
        by_norm.setdefault(_norm(c2_field.name), c2_field.name)
    used: set[str] = set()
    sections: dict[str, dict[str, str]] = {
        "model": {},
        "model_attributes": {},
        "asset": {"title": NAME_PSEUDO_FIELD},
        "asset_attributes": {},
    }
    for section, guesses in (("model", MODEL_GUESSES), ("asset", ASSET_GUESSES)):
        for target, synonyms in guesses.items():
            found = next((by_norm[s] for s in synonyms if s in by_norm and by_norm[s] not in used), None)
            if found is not None:
                sections[section][target] = found
                used.add(found)
    attributes_by_norm = {_norm(a.name): a for a in attributes}
    for c2_field in fields:
        norm = _norm(c2_field.name)
        attribute = attributes_by_norm.get(norm)
        if attribute is None and norm.startswith("serial"):
            attribute = attributes_by_norm.get(_norm(SERIAL_ATTRIBUTE))
        if attribute is None or c2_field.name in used:
            continue
        section = sections["asset_attributes" if attribute.scope == "asset" else "model_attributes"]
        if attribute.name not in section:
            section[attribute.name] = c2_field.name
            used.add(c2_field.name)
    return sections


class _Dumper(yaml.SafeDumper):
    """Block style, except that a secret stays on one line, `{env: VAR}`, as the configuration format writes it."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict[Any, Any]) -> yaml.MappingNode:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=not data or set(data) == {"env"})


_Dumper.add_representer(dict, _represent_dict)


def _yaml(data: Any, indent: str = "") -> str:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
    return "".join(indent + line for line in text.splitlines(keepends=True))


def _comment(text: str, indent: str = "") -> str:
    return "".join(f"{indent}# {line}\n" for line in text.splitlines())


def _category_entry(
    found: C2CategoryFields, key: str, hector_categories: dict[str, HectorCategory], attributes: list[HectorAttribute]
) -> str:
    """One `categories` item, direction none, with comments saying what is left to do."""
    hector = hector_categories.get(found.category.name.strip().casefold())
    mappings = guess_mappings(found.fields, attributes)
    entry = {
        "key": key,
        "cmdb": found.cmdb.name,
        "c2_category": found.category.name,
        "hector_category": hector.name if hector else found.category.name,
        "direction": Direction.NONE.value,
        **mappings,
        "on_missing": "ignore",
    }
    mapped = {c2 for section in mappings.values() for c2 in section.values()}
    notes = [f"C2 {found.cmdb.name} / {found.category.name}"]
    if hector is None:
        notes.append(
            f"Hector has no serialized category named '{found.category.name}': create it in Hector, "
            "or write the name of an existing serialized one."
        )
    missing = [name for name in REQUIRED_MODEL_FIELDS if name not in mappings["model"]]
    if missing:
        notes.append(f"To fill in before switching it on: {', '.join(f'model.{n}' for n in missing)} (required).")
    unmapped = [f.name for f in found.fields if f.name not in mapped]
    if unmapped:
        notes.append(f"C2 fields not mapped: {', '.join(unmapped)}.")
    if SERIAL_ATTRIBUTE in mappings["asset_attributes"]:
        serial = mappings["asset_attributes"][SERIAL_ATTRIBUTE]
        notes.append(
            f"To match CIs with assets already in Hector: identify_by: {{c2: {serial}, hector: {SERIAL_ATTRIBUTE}}}"
        )
    return _comment("\n".join(notes), "  ") + _yaml([entry], "  ")


def _defaults(settings: Any, defaults: dict[str, Any]) -> set[str]:
    """The keys of `defaults` that `settings` leaves at that value: not worth writing out."""
    return {key for key, value in defaults.items() if getattr(settings, key) == value}


def starter_config(config: SystemsConfig, inventory: Inventory, target: Path) -> str:
    """The text of a starter configuration: the current connection settings, every C2 category.

    Secrets stay the `{env: VAR}` references of the current configuration (a Secret holds no
    value). `allow_insecure_http: true` is carried over (an http:// url is refused without it),
    `false`, the default, left out. A whole configuration's other settings are carried over, its
    duckdb_path written absolute so it names the same database wherever the file goes; a file
    with only c2 and hector gets placeholders (PLACEHOLDER_*) and Hector's first stockroom.
    """
    plain_http_off = {"allow_insecure_http": False}
    connection: dict[str, Any] = {
        "c2": config.c2.model_dump(mode="json", exclude_none=True, exclude=_defaults(config.c2, plain_http_off)),
        "hector": config.hector.model_dump(
            mode="json", exclude_none=True, exclude=_defaults(config.hector, plain_http_off)
        ),
    }
    running: dict[str, Any]
    if isinstance(config, SyncConfig):
        connection |= {"notify_on_error": config.notify_on_error,
                       "smtp": config.smtp.model_dump(mode="json", exclude_none=True)}
        running = {
            "default_stockroom": config.default_stockroom,
            "schedule": config.schedule.model_dump(mode="json"),
            "storage": config.storage.model_dump(mode="json"),
        }
        settings = f"""\
The connection, e-mail, schedule and storage settings are those of {config.source}; secrets are
read from the environment variables named by {{env: VAR}}. duckdb_path is that configuration's
database: give this file a database of its own if both configurations will run.
"""
    else:
        connection |= PLACEHOLDER_NOTIFY
        first_stockroom = inventory.stockrooms[0].name if inventory.stockrooms else "Main warehouse"
        running = {"default_stockroom": first_stockroom, "schedule": PLACEHOLDER_SCHEDULE,
                   "storage": PLACEHOLDER_STORAGE}
        settings = f"""\
The connection settings are those of {config.source}; secrets are read from the environment
variables named by {{env: VAR}}. notify_on_error, smtp, default_stockroom and schedule are
placeholders: make them yours before switching a category on. duckdb_path is relative to this
file's folder.
"""
    running["cmdbs"] = [c.name for c in inventory.cmdbs]
    header = f"""\
Starter configuration of hector-sync (docs/configuration.md in the hector_sync repository), written by `hector-sync discover`
on {date.today()} from C2 ITSM {config.c2.url} and Hector {config.hector.url}.
{settings}"""
    stockrooms = ", ".join(s.name for s in inventory.stockrooms) or "none"
    how_to = f"""\
One entry per C2 category, all `direction: none`: nothing syncs until you switch a category on.
For each category to sync: check hector_category and the guessed mappings (Hector field: C2
field; "Name" is the CI's own name), map model.maker, model.model and model.description, then
set direction to c2_to_hector or hector_to_c2 (per_field needs every mapping written
{{c2: FIELD, direction: ...}}). Delete the categories you will never sync, and their CMDBs from
cmdbs. Then run: hector-sync --config {target} validate
"""
    hector_categories = {c.name.strip().casefold(): c for c in inventory.hector_categories if c.type == "serialized"}
    taken: set[str] = set()
    entries = [
        _category_entry(found, category_key(found.category.name, taken), hector_categories, inventory.attributes)
        for found in inventory.categories
    ]
    return (
        _comment(header)
        + "\n"
        + _yaml(connection)
        + _comment(f"New assets are created here. Hector's stockrooms: {stockrooms}")
        + _yaml(running)
        + "\n"
        + _comment(how_to)
        + "categories:\n"
        + "\n".join(entries)
    )
