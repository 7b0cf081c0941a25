"""A category's mapping resolved into typed targets: what the SQL of reconciliation iterates over.

Configuration names Hector fields and attributes; reconciliation needs, for each, where the
value comes from in C2, how to compare it (text, number, date) and how to read it back from
Hector's snapshot. This module is the only place that knows both vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hector_sync.config import CategoryConfig, Direction

Kind = Literal["text", "number", "date"]
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


@dataclass(frozen=True)
class Target:
    """One Hector field or attribute fed from one C2 field."""

    name: str  # "maker", "title", "attributes.Serial number"
    scope: Scope
    source: str  # C2 field name, or "Name" for the CI's own name
    kind: Kind
    direction: Direction

    @property
    def attribute(self) -> str | None:
        return self.name.removeprefix(ATTRIBUTE_PREFIX) if self.name.startswith(ATTRIBUTE_PREFIX) else None


@dataclass(frozen=True)
class CategoryPlan:
    key: str
    direction: Direction
    targets: tuple[Target, ...]
    identify_source: str | None
    identify_target: str | None  # Hector asset field or "attributes.<name>"
    on_missing: Literal["ignore", "retire"]
    max_change_fraction: float

    def scoped(self, scope: Scope) -> tuple[Target, ...]:
        return tuple(t for t in self.targets if t.scope == scope)

    def target(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)


def build_plan(category: CategoryConfig, attribute_kinds: dict[tuple[Scope, str], Kind]) -> CategoryPlan:
    """Resolve a category's mapping; `attribute_kinds` comes from Hector's attribute list.

    An attribute Hector does not define with the right scope is a broken mapping: the caller's
    mapping check reports it before anything is written, so here it raises KeyError.
    """
    targets: list[Target] = []
    for scope, fields, kinds in (
        ("model", category.model, MODEL_FIELD_KINDS),
        ("asset", category.asset, ASSET_FIELD_KINDS),
    ):
        targets += [Target(n, scope, m.c2, kinds[n], m.direction) for n, m in fields.items()]
    for scope, attrs in (("model", category.model_attributes), ("asset", category.asset_attributes)):
        targets += [
            Target(ATTRIBUTE_PREFIX + n, scope, m.c2, attribute_kinds[(scope, n)], m.direction)
            for n, m in attrs.items()
        ]
    if "title" not in category.asset:
        # The rules: with no title mapped, an asset is titled from the CI's name.
        targets.append(Target("title", "asset", NAME_PSEUDO_FIELD, "text", category.direction))
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
    )
