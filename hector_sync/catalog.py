"""The names of the configuration resolved against both live systems.

Configuration speaks in names (CMDB "Production", field "SerialNumber", attribute "Serial
number"); the APIs speak in ids. `Catalog` resolves each category against both systems' lists,
or says in words what does not exist. Each client reads those lists once, so a command (or a
Dagster run) reads them once for all its categories, and the next one reads them again:
`hector-sync validate` and the mapping check that guards every writeback use it live; a run
resolves once (the `category_catalog` asset) and every later step reads that resolution back
from DuckDB (`ResolvedCategory.from_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

from hector_sync.c2 import C2Client, C2Field
from hector_sync.config import CategoryConfig, SyncConfig
from hector_sync.hector import HectorAttribute, HectorClient
from hector_sync.reconcile.mapping import ASSET_FIELD_KINDS, NAME_PSEUDO_FIELD, ApiNames, Kind, Scope


class MappingInvalid(Exception):
    """A category's names do not all exist in the live systems."""

    def __init__(self, key: str, problems: list[str]) -> None:
        self.key = key
        self.problems = problems
        super().__init__(f"category '{key}': the mapping does not match the live systems: " + "; ".join(problems))


@dataclass(frozen=True)
class ResolvedCategory:
    """A category's names resolved to ids. Everything past the catalog (snapshot tables, SQL,
    change rows) knows a field or attribute by its trimmed name, the one the configuration
    matches; the systems' own spelling is only used on the wire: C2 ITSM's fields go by id, and
    Hector's attributes by the raw name in `attribute_names`."""

    category: CategoryConfig
    cmdb_id: str
    c2_category_id: str
    c2_fields: dict[str, C2Field]  # by trimmed name
    hector_category_id: int
    stockroom_id: int
    attribute_kinds: dict[tuple[Scope, str], Kind]  # by trimmed name
    attribute_names: dict[tuple[Scope, str], str] = field(default_factory=dict)  # trimmed → Hector's own

    @property
    def field_names_by_id(self) -> dict[str, str]:
        """C2 field id → trimmed name: how a CI's `fields` are keyed in the snapshot."""
        return {f.id: name for name, f in self.c2_fields.items()}

    @cached_property
    def api_names(self) -> ApiNames:
        """The ids and spellings the reconciliation writes each change row's request in."""
        return ApiNames(
            cmdb_id=self.cmdb_id, c2_category_id=self.c2_category_id, hector_category_id=self.hector_category_id,
            stockroom_id=self.stockroom_id, c2_field_ids={name: f.id for name, f in self.c2_fields.items()},
            attribute_names=self.attribute_names,
        )

    def hector_name(self, scope: Scope, name: str) -> str:
        """The name Hector knows an attribute by (perhaps with stray spaces)."""
        return self.api_names.attribute_name(scope, name)

    def to_json(self) -> str:
        """What the `category_catalog` asset stores: the ids, types and spellings, not the
        configuration (which `mapping_of` keeps beside it)."""
        return json.dumps({
            "cmdb_id": self.cmdb_id, "c2_category_id": self.c2_category_id,
            "c2_fields": {name: f.model_dump(mode="json") for name, f in self.c2_fields.items()},
            "hector_category_id": self.hector_category_id, "stockroom_id": self.stockroom_id,
            "attribute_kinds": [[scope, name, kind] for (scope, name), kind in self.attribute_kinds.items()],
            "attribute_names": [[scope, name, raw] for (scope, name), raw in self.attribute_names.items()],
        })

    @classmethod
    def from_json(cls, category: CategoryConfig, text: str) -> ResolvedCategory:
        data = json.loads(text)
        return cls(
            category=category, cmdb_id=data["cmdb_id"], c2_category_id=data["c2_category_id"],
            c2_fields={name: C2Field.model_validate(f) for name, f in data["c2_fields"].items()},
            hector_category_id=data["hector_category_id"], stockroom_id=data["stockroom_id"],
            attribute_kinds={(scope, name): kind for scope, name, kind in data["attribute_kinds"]},
            attribute_names={(scope, name): raw for scope, name, raw in data["attribute_names"]},
        )


def mapping_of(config: SyncConfig, category: CategoryConfig) -> str:
    """What a resolution was made from: the category's configuration and the stockroom name.
    A stored resolution serves only while the file still says the same."""
    return json.dumps({"category": category.model_dump(mode="json"), "default_stockroom": config.default_stockroom},
                      sort_keys=True)


def _by_name(items: list) -> dict:
    """Names match case-sensitively after trimming spaces, as both specs say."""
    return {i.name.strip(): i for i in items}


@dataclass
class Catalog:
    """Resolves categories against both systems' lists, which each client asks once
    (`JsonApi.listed_once`): all categories of a command, or of a Dagster run, resolve from one
    reading of them."""

    config: SyncConfig
    c2: C2Client
    hector: HectorClient

    def hector_lists(self) -> tuple[dict, dict, list[HectorAttribute]]:
        return (
            _by_name(self.hector.listed_once(self.hector.list_categories)),
            _by_name(self.hector.listed_once(self.hector.list_stockrooms)),
            self.hector.listed_once(self.hector.list_attributes),
        )

    def problems(self, category: CategoryConfig) -> list[str]:
        try:
            self.resolve(category)
        except MappingInvalid as invalid:
            return invalid.problems
        return []

    def resolve(self, category: CategoryConfig) -> ResolvedCategory:
        problems: list[str] = []
        cmdbs = _by_name(self.c2.listed_once(self.c2.list_cmdbs))
        cmdb = cmdbs.get(category.cmdb.strip())
        c2_category = None
        fields: dict[str, C2Field] = {}
        if cmdb is None:
            problems.append(f"C2 ITSM has no CMDB named '{category.cmdb}' (found: {', '.join(cmdbs) or 'none'})")
        else:
            categories = _by_name(self.c2.listed_once(self.c2.list_categories, cmdb.id))
            c2_category = categories.get(category.c2_category.strip())
            if c2_category is None:
                known = ", ".join(categories) or "none"
                problems.append(f"CMDB '{category.cmdb}' has no category named '{category.c2_category}' (found: {known})")
            else:
                fields = _by_name(self.c2.listed_once(self.c2.list_fields, cmdb.id, c2_category.id))
                for source in sorted(_c2_sources(category) - set(fields) - {NAME_PSEUDO_FIELD}):
                    problems.append(
                        f"C2 category '{category.c2_category}' has no field named '{source}' (found: {', '.join(fields)})"
                    )
        hector_categories, stockrooms, attributes = self.hector_lists()
        hector_category = hector_categories.get(category.hector_category.strip())
        if hector_category is None:
            problems.append(f"Hector has no category named '{category.hector_category}'")
        elif hector_category.type != "serialized":
            problems.append(
                f"Hector category '{category.hector_category}' is of type {hector_category.type}; "
                "only serialized categories take part in the sync"
            )
        stockroom = stockrooms.get(self.config.default_stockroom.strip())
        if stockroom is None:
            problems.append(f"Hector has no stockroom named '{self.config.default_stockroom}' (default_stockroom)")
        kinds = {(_scope(a), a.name.strip()): a.type for a in attributes}
        for scope, name in sorted(_attributes(category)):
            if (scope, name) not in kinds:
                hector_scope = "asset" if scope == "asset" else "subcategory"
                problems.append(f"Hector has no attribute '{name}' with scope {hector_scope}")
        if problems:
            raise MappingInvalid(category.key, problems)
        assert cmdb and c2_category and hector_category and stockroom
        return ResolvedCategory(
            category=category, cmdb_id=cmdb.id, c2_category_id=c2_category.id, c2_fields=fields,
            hector_category_id=hector_category.id, stockroom_id=stockroom.id, attribute_kinds=kinds,
            attribute_names={(_scope(a), a.name.strip()): a.name for a in attributes},
        )


def _scope(attribute: HectorAttribute) -> Scope:
    return "asset" if attribute.scope == "asset" else "model"


def _c2_sources(category: CategoryConfig) -> set[str]:
    maps = [category.model, category.model_attributes, category.asset, category.asset_attributes]
    sources = {m.c2 for mapping in maps for m in mapping.values()}
    if category.identify_by:
        sources.add(category.identify_by.c2)
    return sources


def _attributes(category: CategoryConfig) -> set[tuple[Scope, str]]:
    found: set[tuple[Scope, str]] = {("model", n.strip()) for n in category.model_attributes}
    found |= {("asset", n.strip()) for n in category.asset_attributes}
    if category.identify_by and category.identify_by.hector not in ASSET_FIELD_KINDS:
        found.add(("asset", category.identify_by.hector))
    return found
