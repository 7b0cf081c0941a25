"""A category's mapping resolved into typed targets: what the SQL of reconciliation iterates over.

Configuration names Hector fields and attributes; reconciliation needs, for each, the C2 field
on the other end, which way it flows, how to compare it (text, number, date, or user: an e-mail
address, in any case) and how to read it back from Hector's snapshot. This module is the only
place that knows both vocabularies; `ApiNames` adds the ids and spellings the two APIs use on
the wire, so that a change row's request is written at plan time (`reconcile.requests`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hector_sync.config import CategoryConfig, Direction

Kind = Literal["text", "number", "date", "user"]
Scope = Literal["model", "asset"]

NAME_PSEUDO_FIELD = "Name"
MODEL_KEY_FIELDS = ("maker", "model", "description")
MODEL_FIELD_KINDS: dict[str, Kind] = {
    "maker": "text", "model": "text", "description": "text", "note": "text",
    "price": "number", "weight": "number", "vendor_sku": "text",
}
ASSET_FIELD_KINDS: dict[str, Kind] = {
    "title": "text", "asset_tag": "text", "note": "text", "acquisition_date": "date",
    "assigned_date": "date", "return_date": "date", "maintenance_date": "date",
    "end_of_life_date": "date",
}
ATTRIBUTE_PREFIX = "attributes."


def comparison_kind(hector_kind: Kind, c2_type: str) -> Kind:
    """Compare as the stricter of the two sides, so '42' and 42.0 are one value, not a diff, and
    'Jane.Doe@Example.com' in a C2 `user` field is the text 'jane.doe@example.com' in Hector."""
    if hector_kind == "text" and c2_type in ("number", "date", "user"):
        return c2_type  # type: ignore[return-value]
    return hector_kind


@dataclass(frozen=True)
class Target:
    """One Hector field or attribute paired with one C2 field, flowing one way."""

    name: str  # "maker", "title", "attributes.Serial number"
    scope: Scope
    source: str  # C2 field name, or "Name" for the CI's own name
    kind: Kind  # how both sides' values are compared
    direction: Direction  # c2_to_hector or hector_to_c2, also under per_field
    c2_type: str = "text"  # the C2 field's type, which a value written to C2 must have

    @property
    def attribute(self) -> str | None:
        return self.name.removeprefix(ATTRIBUTE_PREFIX) if self.name.startswith(ATTRIBUTE_PREFIX) else None


@dataclass(frozen=True)
class ApiNames:
    """What the APIs call the category's things, from the catalog's resolution
    (`catalog.ResolvedCategory.api_names`): the ids and spellings a request is written in.

    Left unresolved (the SQL alone, as the reconciliation tests and the benchmark run it), the
    ids are empty and every name is its own spelling: the requests keep their shape."""

    cmdb_id: str = ""
    c2_category_id: str = ""
    hector_category_id: int | None = None
    stockroom_id: int | None = None
    c2_field_ids: dict[str, str] = field(default_factory=dict)  # trimmed C2 field name → its id
    attribute_names: dict[tuple[Scope, str], str] = field(default_factory=dict)  # trimmed → Hector's own

    def attribute_name(self, scope: Scope, name: str) -> str:
        """The name Hector knows an attribute by (perhaps with stray spaces)."""
        return self.attribute_names.get((scope, name), name)


@dataclass(frozen=True)
class CategoryPlan:
    key: str
    direction: Direction
    targets: tuple[Target, ...]
    identify_source: str | None
    identify_target: str | None  # Hector asset field or "attributes.<name>"
    on_missing: Literal["ignore", "retire"]
    max_change_fraction: float
    # Every Hector attribute's type, mapped or not: a PATCH sends an asset's attributes whole.
    attribute_kinds: dict[tuple[Scope, str], Kind] = field(default_factory=dict)
    api: ApiNames = ApiNames()

    @property
    def model_direction(self) -> Direction:
        """Which way maker, model and description flow; the loader makes all three agree."""
        return self.target("maker").direction

    @property
    def per_field(self) -> bool:
        return self.direction is Direction.PER_FIELD

    def creates_toward(self, direction: Direction) -> bool:
        """Missing items are created only on the side that does not own the model fields."""
        return self.model_direction is direction

    def toward(self, direction: Direction) -> tuple[int, ...]:
        """Indexes of the targets that flow `direction`."""
        return tuple(i for i, t in enumerate(self.targets) if t.direction is direction)

    def written_to_assets(self) -> tuple[int, ...]:
        """Indexes of the asset targets a sync writes to Hector: what the written digests of
        both sides cover (`normalize.written_digest`)."""
        return tuple(i for i in self.toward(Direction.C2_TO_HECTOR) if self.targets[i].scope == "asset")

    def scoped(self, scope: Scope) -> tuple[Target, ...]:
        return tuple(t for t in self.targets if t.scope == scope)

    def target(self, name: str) -> Target:
        return self.targets[self.index(name)]

    def index(self, name: str) -> int:
        """The position of target `name`: its `r{i}`, `v{i}`, `h{i}` and `fields[i + 1]` in SQL."""
        return next(i for i, t in enumerate(self.targets) if t.name == name)


def build_plan(
    category: CategoryConfig, attribute_kinds: dict[tuple[Scope, str], Kind], c2_types: dict[str, str] | None = None,
    api: ApiNames = ApiNames(),
) -> CategoryPlan:
    """Resolve a category's mapping; `attribute_kinds` comes from Hector's attribute list,
    `c2_types` (field name → type) from the C2 category's fields, and `api` from the catalog.

    An attribute Hector does not define with the right scope is a broken mapping: the caller's
    mapping check reports it before anything is written, so here it raises KeyError.
    """
    types = c2_types or {}

    def target(name: str, scope: Scope, source: str, kind: Kind, direction: Direction) -> Target:
        c2_type = types.get(source, "text")
        return Target(name, scope, source, comparison_kind(kind, c2_type), direction, c2_type)

    targets: list[Target] = []
    for scope, fields, kinds in (
        ("model", category.model, MODEL_FIELD_KINDS),
        ("asset", category.asset, ASSET_FIELD_KINDS),
    ):
        targets += [target(n, scope, m.c2, kinds[n], m.direction) for n, m in fields.items()]
    for scope, attrs in (("model", category.model_attributes), ("asset", category.asset_attributes)):
        targets += [  # an attribute is known by its trimmed name, as the catalog matched it
            target(ATTRIBUTE_PREFIX + n.strip(), scope, m.c2, attribute_kinds[(scope, n.strip())], m.direction)
            for n, m in attrs.items()
        ]
    if "title" not in category.asset:
        # The rules: with no title mapped, an asset is titled from the CI's name (and a CI
        # created from an asset is named from its title), in the direction of the model.
        title_flow = category.model["maker"].direction if category.direction is Direction.PER_FIELD else category.direction
        targets.append(target("title", "asset", NAME_PSEUDO_FIELD, "text", title_flow))
    identify = category.identify_by
    identify_target = None
    if identify is not None:
        identify_target = identify.hector if identify.hector in ASSET_FIELD_KINDS else ATTRIBUTE_PREFIX + identify.hector
    return CategoryPlan(
        key=category.key,
        direction=category.direction,
        targets=tuple(targets),
        identify_source=identify.c2 if identify else None,
        identify_target=identify_target,
        on_missing=category.on_missing,
        max_change_fraction=category.max_change_fraction,
        attribute_kinds=attribute_kinds,
        api=api,
    )
