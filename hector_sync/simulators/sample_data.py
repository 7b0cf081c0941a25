"""Deterministic sample inventory for the simulators: C2 ITSM CIs and Hector's initial state.

Every CI is computed on demand from (seed, category, index), so a category of a million CIs
costs nothing until a page of it is asked for; nothing here materialises a category.

CI ids are ``ci-`` + the category's digit + the index on 7 digits (Laptops index 42 is
``ci-20000042``), so string order is index order and CIs created later (indexes from the
category's size upwards) sort after the generated ones.

``copies`` (default 0) adds generic copies of Printers after the six categories, for
benchmarks that need many small categories: "Printers 01", "Printers 02"… with their own C2
ids (``cat-101``…), Hector categories (ids 101…) and CI ids (number ``901``… and the index on
5 digits: ``ci-90100042``). Without copies nothing here differs.

Messy records, by index inside *every* category (present when the category is big enough;
the demo size of 300 has them all). Tests use :data:`MESSY`, never the numbers:

======================  =====  ==========================================================
kind                    index  what the CI looks like
======================  =====  ==========================================================
``blank_maker``         3      Manufacturer is ``""``
``whitespace_model``    7      Model is ``"   "``
``padded_maker``        11     Manufacturer has stray spaces (``"  HP "`` in Printers)
``duplicate_serial``    13     same SerialNumber as index :data:`DUPLICATE_SERIAL_OF` (5)
``retired``             17     status ``retired``
``no_description``      19     no Description field at all
``padded_owner``        27     Owner has stray spaces (``"  zoe.silva@example.com "``)
``upper_owner``         29     Owner is all upper case (``"ZOE.SILVA@EXAMPLE.COM"``)
======================  =====  ==========================================================

The two Owner records hold an address in every category but Servers, whose CIs have no owner.

Indexes below :data:`ORDINARY_FROM` are otherwise ordinary and active; from there on about
2 % of CIs are retired at random. Everyday gaps anywhere: AssetTag null for ~3 %, Owner null
for ~10 % (and every server), WarrantyEnd null for ~8 %. Owner is a ``user`` field: an e-mail
address, firstname.lastname@example.com, written Firstname.Lastname@example.com in ~10 %.

Hector starts with unlinked Laptops assets whose "Serial number" equals the SerialNumber of
the Laptops CIs at :data:`UNLINKED_LAPTOPS`, and two unlinked assets sharing the serial of the
Laptops CI at :data:`AMBIGUOUS_LAPTOP`.
"""

import hashlib
import struct
import time
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache, cached_property
from itertools import accumulate
from typing import Any, Literal

from hector_sync.demo import DEMO_SEED, DEMO_SIZE

FieldType = Literal["text", "number", "date", "choice", "user"]
MessyKind = Literal[
    "blank_maker", "whitespace_model", "padded_maker", "duplicate_serial", "retired",
    "no_description", "padded_owner", "upper_owner",
]

MESSY: Mapping[MessyKind, int] = {
    "blank_maker": 3,
    "whitespace_model": 7,
    "padded_maker": 11,
    "duplicate_serial": 13,
    "retired": 17,
    "no_description": 19,
    "padded_owner": 27,
    "upper_owner": 29,
}
DUPLICATE_SERIAL_OF = 5
ORDINARY_FROM = 50
UNLINKED_LAPTOPS: tuple[int, ...] = (21, 22, 23)
AMBIGUOUS_LAPTOP = 24

#: Ids have 7 index digits; the headroom above this is for CIs created through the API.
MAX_GENERATED_PER_CATEGORY = 9_000_000
INDEX_DIGITS = 7

RECENT_WINDOW_S = 7 * 86400
HISTORY_S = 730 * 86400
RECENT_PERCENT = 5
# Purchase dates do not move with the server's clock, so they are fixed to this date.
PURCHASES_UNTIL = date(2026, 6, 30)
_PURCHASES_UNTIL_ORDINAL = PURCHASES_UNTIL.toordinal()


@dataclass(frozen=True)
class FieldSpec:
    id: str
    name: str
    type: FieldType
    required: bool = False


@dataclass(frozen=True)
class Model:
    """A product line: many CIs share one, which is what makes Hector subcategories useful."""

    maker: str
    model: str
    description: str
    price: float
    weight: float
    popularity: int


@dataclass(frozen=True)
class CategorySpec:
    id: str
    name: str
    cmdb_id: str
    digit: int
    name_prefix: str
    fields: tuple[FieldSpec, ...]
    models: tuple[Model, ...]
    serial_prefix: str
    warranty_years: int
    locations: tuple[str, ...]

    @property
    def index_digits(self) -> int:
        """Digits of the index in a CI id: every id has 8 digits after ``ci-``, whatever the
        length of the category's number."""
        return INDEX_DIGITS + 1 - len(str(self.digit))

    def ci_id(self, index: int) -> str:
        """The id of the CI at `index` of this category, generated or created."""
        return f"ci-{self.digit}{index:0{self.index_digits}d}"

    def field_id(self, name: str) -> str:
        """The id of the field called `name`; mappings and tests address fields by name."""
        return next(f.id for f in self.fields if f.name == name)

    @cached_property
    def field_names(self) -> tuple[tuple[str, str], ...]:
        """(id, name) pairs, computed once: ci_at runs a million times on big categories."""
        return tuple((f.id, f.name) for f in self.fields)


CMDBS: tuple[tuple[str, str], ...] = (("cmdb-1", "Production"), ("cmdb-2", "Lab"))

_PRODUCTION_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("Manufacturer", "text"), ("Model", "text"), ("Description", "text"),
    ("SerialNumber", "text"), ("AssetTag", "text"), ("PurchaseDate", "date"),
    ("Cost", "number"), ("Owner", "user"), ("Location", "choice"), ("WarrantyEnd", "date"),
)
_LAB_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("Manufacturer", "text"), ("Model", "text"), ("Description", "text"),
    ("SerialNumber", "text"), ("Owner", "user"), ("Location", "choice"),
    ("CalibrationDue", "date"),
)

OFFICES: tuple[str, ...] = (
    "Montréal – 3e étage", "Montréal – Entrepôt B", "Paris – La Défense", "Zürich",
    "München", "東京オフィス", "Москва", "São Paulo", "Kraków", "New York – 5th Ave",
)
DATA_CENTERS: tuple[str, ...] = ("DC-1 Montréal", "DC-2 Zürich", "DC-3 東京")
LABS: tuple[str, ...] = ("Lab Montréal", "Labor Zürich", "東京ラボ")

FIRST_NAMES: tuple[str, ...] = (
    "anna", "jose", "francois", "chloe", "kenji", "yuki", "olga", "dmitri", "lukas", "zoe",
    "noah", "marta", "li", "amelie", "sebastien", "bjorn", "ines", "thiago",
)
LAST_NAMES: tuple[str, ...] = (
    "martin", "garcia", "tremblay", "dubois", "tanaka", "sato", "ivanova", "petrov", "muller",
    "kowalski", "silva", "nguyen", "schneider", "leclerc", "rossi", "cote",
)
OWNER_DOMAIN = "example.com"


def _category(
    number: int, name: str, cmdb_id: str, digit: int, name_prefix: str,
    fields: tuple[tuple[str, FieldType], ...], models: tuple[Model, ...], serial_prefix: str,
    warranty_years: int, locations: tuple[str, ...],
) -> CategorySpec:
    specs = tuple(FieldSpec(f"f-{number}{j:02d}", n, t) for j, (n, t) in enumerate(fields, 1))
    return CategorySpec(f"cat-{number}", name, cmdb_id, digit, name_prefix, specs, models,
                        serial_prefix, warranty_years, locations)


CATEGORIES: tuple[CategorySpec, ...] = (
    _category(7, "Printers", "cmdb-1", 1, "PRN", _PRODUCTION_FIELDS, (
        Model("HP", "LaserJet M404", "Mono laser printer", 329.0, 8.6, 30),
        Model("Brother", "HL-L2350DW", "Compact mono laser printer", 159.0, 7.2, 25),
        Model("HP", "Color LaserJet Pro M454dw", "Color laser printer", 499.0, 18.9, 10),
        Model("Canon", "i-SENSYS MF445dw", "Multifunction laser printer", 389.0, 14.1, 15),
        Model("Xerox", "VersaLink C405", "Color multifunction printer", 899.0, 30.0, 8),
        Model("Kyocera", "ECOSYS P2040dn", "Mono laser printer", 219.0, 11.0, 12),
    ), "PR", 3, OFFICES),
    _category(8, "Laptops", "cmdb-1", 2, "LAP", _PRODUCTION_FIELDS, (
        Model("Lenovo", "ThinkPad T14 Gen 4", "14-inch business laptop", 1449.0, 1.4, 30),
        Model("Dell", "Latitude 5440", "14-inch business laptop", 1299.0, 1.5, 25),
        Model("Apple", "MacBook Pro 14", "14-inch laptop, M3 Pro", 2399.0, 1.6, 15),
        Model("HP", "EliteBook 840 G10", "14-inch business laptop", 1389.0, 1.4, 15),
        Model("Lenovo", "ThinkPad X1 Carbon Gen 11", "Ultralight 14-inch laptop", 1899.0, 1.1, 10),
        Model("Microsoft", "Surface Laptop 5", "13.5-inch touchscreen laptop", 1299.0, 1.3, 5),
    ), "LT", 3, OFFICES),
    _category(9, "Monitors", "cmdb-1", 3, "MON", _PRODUCTION_FIELDS, (
        Model("Dell", "U2723QE", "27-inch 4K USB-C monitor", 579.0, 6.6, 30),
        Model("LG", "27UL850", "27-inch 4K monitor", 449.0, 6.1, 20),
        Model("Dell", "P2422H", "24-inch Full HD monitor", 219.0, 5.4, 25),
        Model("HP", "E24 G5", "24-inch Full HD monitor", 199.0, 5.2, 15),
        Model("EIZO", "FlexScan EV2760", "27-inch QHD monitor", 749.0, 7.4, 10),
    ), "MN", 5, OFFICES),
    _category(10, "Phones", "cmdb-1", 4, "PHN", _PRODUCTION_FIELDS, (
        Model("Cisco", "IP Phone 8845", "Video IP desk phone", 449.0, 1.2, 30),
        Model("Yealink", "T54W", "Prime business IP phone", 219.0, 1.0, 30),
        Model("Poly", "VVX 450", "12-line IP desk phone", 259.0, 1.1, 15),
        Model("Apple", "iPhone 15", "Smartphone, 128 GB", 899.0, 0.17, 15),
        Model("Samsung", "Galaxy A54 5G", "Smartphone, 128 GB", 449.0, 0.2, 10),
    ), "PH", 2, OFFICES),
    _category(11, "Servers", "cmdb-1", 5, "SRV", _PRODUCTION_FIELDS, (
        Model("Dell", "PowerEdge R750", "2U rack server, dual socket", 12500.0, 28.0, 35),
        Model("HPE", "ProLiant DL380 Gen11", "2U rack server, dual socket", 13900.0, 30.0, 30),
        Model("Lenovo", "ThinkSystem SR650 V3", "2U rack server, dual socket", 11800.0, 29.0, 15),
        Model("Dell", "PowerEdge R650", "1U rack server, dual socket", 9800.0, 21.0, 20),
    ), "SV", 5, DATA_CENTERS),
    _category(12, "Test devices", "cmdb-2", 6, "TST", _LAB_FIELDS, (
        Model("Raspberry Pi", "Raspberry Pi 5", "Single-board computer, 8 GB", 80.0, 0.05, 40),
        Model("Keysight", "DSOX1204G", "4-channel oscilloscope", 1290.0, 3.8, 15),
        Model("Fluke", "87V", "Industrial digital multimeter", 549.0, 0.36, 25),
        Model("Arduino", "Uno R4 WiFi", "Microcontroller board", 27.5, 0.03, 20),
    ), "TD", 1, LABS),
)
CATEGORIES_BY_NAME: Mapping[str, CategorySpec] = {c.name: c for c in CATEGORIES}
CATEGORIES_BY_ID: Mapping[str, CategorySpec] = {c.id: c for c in CATEGORIES}
_CATEGORIES_BY_DIGIT: Mapping[str, CategorySpec] = {str(c.digit): c for c in CATEGORIES}

COPIED = "Printers"
FIRST_COPY_NUMBER = 100  # copy k: C2 category cat-(100+k), Hector category id 100+k
FIRST_COPY_DIGIT = 900  # copy k's CI ids start ci-(900+k): no category above has digit 9
MAX_COPIES = 99


def copies_of(count: int) -> tuple[CategorySpec, ...]:
    """`count` generic copies of Printers, each a category of its own (see the module doc)."""
    if not 0 <= count <= MAX_COPIES:
        raise ValueError(f"copies must be 0..{MAX_COPIES}, not {count}")
    base = CATEGORIES_BY_NAME[COPIED]
    fields = tuple((f.name, f.type) for f in base.fields)
    return tuple(
        _category(FIRST_COPY_NUMBER + k, f"{base.name} {k:02d}", base.cmdb_id, FIRST_COPY_DIGIT + k,
                  base.name_prefix, fields, base.models, base.serial_prefix, base.warranty_years,
                  base.locations)
        for k in range(1, count + 1))

# Serials are an affine bijection of the index modulo 36**6, so they never collide by chance.
_SERIAL_MOD = 36**6
_SERIAL_MULT = 1_103_515_245  # odd and not a multiple of 3: coprime with 36**6
_WORDS = struct.Struct("<16H")
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASE36_3: tuple[str, ...] = tuple(a + b + c for a in _BASE36 for b in _BASE36 for c in _BASE36)


def category(name: str) -> CategorySpec:
    """The category called `name` (KeyError names it when unknown)."""
    return CATEGORIES_BY_NAME[name]


def ci_id(category_name: str, index: int) -> str:
    """The id of the CI at `index` of a category, generated or created."""
    return category(category_name).ci_id(index)


def parse_ci_id(value: str, by_digit: Mapping[str, CategorySpec] = _CATEGORIES_BY_DIGIT
                ) -> tuple[CategorySpec, int] | None:
    """(category, index) of a CI id, or None when it cannot be one of ours (`by_digit`: the
    categories by number, those above unless a SampleData with copies asks)."""
    digits = value[3:]
    if not value.startswith("ci-") or len(digits) != INDEX_DIGITS + 1 or not digits.isdigit():
        return None
    spec = by_digit.get(digits[0]) or by_digit.get(digits[:3])
    return (spec, int(digits[-spec.index_digits:])) if spec else None


def iso_utc(ts: float) -> str:
    """Whole-second UTC timestamp in the form both APIs use."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@cache
def _iso_date(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat()


# Every owner address, lower case and as people capitalise it, built once: ci_at runs a million
# times on big categories.
_ADDRESSES: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"{first}.{last}@{OWNER_DOMAIN}" for first in firsts for last in lasts)
    for firsts, lasts in ((FIRST_NAMES, LAST_NAMES),
                          ([n.capitalize() for n in FIRST_NAMES], [n.capitalize() for n in LAST_NAMES])))


def _address(w: tuple[int, ...]) -> str:
    """An owner's e-mail address (a C2 `user` value), capitalised as people type it in ~10 %."""
    index = w[6] % len(FIRST_NAMES) * len(LAST_NAMES) + w[7] % len(LAST_NAMES)
    return _ADDRESSES[w[14] % 100 < 10][index]


def _cumulative(models: tuple[Model, ...]) -> list[int]:
    return list(accumulate(m.popularity for m in models))


class SampleData:
    """The generator: sizes per category plus pure functions of (seed, category, index).

    `reference` (epoch seconds, default now) is the instant the CIs' `modified_at` values lead
    up to: about 5 % of them fall in the 7 days before it, the rest over the two years before.
    `copies` adds that many copies of Printers (:func:`copies_of`) to the categories.
    """

    def __init__(self, seed: int = DEMO_SEED, size: int = DEMO_SIZE,
                 sizes: Mapping[str, int] | None = None, reference: int | None = None,
                 copies: int = 0) -> None:
        self.categories: tuple[CategorySpec, ...] = CATEGORIES + copies_of(copies)
        self.categories_by_id: Mapping[str, CategorySpec] = {c.id: c for c in self.categories}
        self._by_name = {c.name: c for c in self.categories}
        self._by_digit = {str(c.digit): c for c in self.categories}
        unknown = set(sizes or {}) - set(self._by_name)
        if unknown:
            raise ValueError(f"unknown categories in sizes: {sorted(unknown)}; "
                             f"known: {sorted(self._by_name)}")
        self.seed = seed
        self.reference = int(time.time()) if reference is None else reference
        self.sizes: dict[str, int] = {c.name: (sizes or {}).get(c.name, size) for c in self.categories}
        for spec in self.categories:
            # ids keep a tenth of a category's index range free for CIs created through the API
            limit = min(MAX_GENERATED_PER_CATEGORY, 10**spec.index_digits * 9 // 10)
            if not 0 <= self.sizes[spec.name] <= limit:
                raise ValueError(f"size of {spec.name} must be 0..{limit}, not {self.sizes[spec.name]}")
        self._hashers = {c.name: hashlib.blake2b(f"{seed}\x1f{c.name}".encode(), digest_size=32)
                         for c in self.categories}
        self._popularity = {c.name: _cumulative(c.models) for c in self.categories}
        self._serial_offset = {c.name: int.from_bytes(self._hashers[c.name].digest()) % _SERIAL_MOD
                              for c in self.categories}

    def category(self, name: str) -> CategorySpec:
        """The category called `name`, copies included (KeyError names it when unknown)."""
        return self._by_name[name]

    def parse_ci_id(self, value: str) -> tuple[CategorySpec, int] | None:
        """(category, index) of a CI id, copies included, or None when it cannot be one of ours."""
        return parse_ci_id(value, self._by_digit)

    def count(self, category_name: str) -> int:
        """How many CIs the generator makes in the category (created ones not included)."""
        return self.sizes[category_name]

    def ci_ids(self, category_name: str) -> Iterator[str]:
        """The generated CI ids of a category, in order, lazily."""
        spec = self.category(category_name)
        return (spec.ci_id(i) for i in range(self.sizes[category_name]))

    def _words(self, category_name: str, index: int) -> tuple[int, ...]:
        """16 pseudo-random 16-bit words for one CI: every generated value is read from them."""
        h = self._hashers[category_name].copy()
        h.update(index.to_bytes(8, "little", signed=True))
        return _WORDS.unpack(h.digest())

    def _modified_ts(self, w: tuple[int, ...]) -> int:
        offset = w[2] << 16 | w[3]
        if w[1] % 100 < RECENT_PERCENT:
            return self.reference - 60 - offset % (RECENT_WINDOW_S - 60)
        return self.reference - RECENT_WINDOW_S - offset % (HISTORY_S - RECENT_WINDOW_S)

    def modified_ts(self, category_name: str, index: int) -> int:
        """Epoch seconds of a generated CI's `modified_at`; cheap, for `modified_since` scans."""
        return self._modified_ts(self._words(category_name, index))

    def indexes_modified_since(self, category_name: str, since: float) -> array:
        """Generated indexes modified at or after `since`, ascending, 4 bytes each."""
        words, stamp = self._words, self._modified_ts
        return array("I", (i for i in range(self.sizes[category_name])
                           if stamp(words(category_name, i)) >= since))

    def serial(self, category_name: str, index: int) -> str:
        """SerialNumber of the CI at `index`, without the duplicated-serial mess applied."""
        n = (index * _SERIAL_MULT + self._serial_offset[category_name]) % _SERIAL_MOD
        high, low = divmod(n, len(_BASE36_3))
        return self.category(category_name).serial_prefix + _BASE36_3[high] + _BASE36_3[low]

    def model_at(self, category_name: str, index: int) -> Model:
        """The product line of a generated CI (before messy records are applied)."""
        return self._model(category_name, self._words(category_name, index), index)

    def _model(self, category_name: str, w: tuple[int, ...], index: int) -> Model:
        spec = self.category(category_name)
        if index == MESSY["padded_maker"]:
            return spec.models[0]
        bounds = self._popularity[category_name]
        return spec.models[bisect_right(bounds, w[0] % bounds[-1])]

    def ci_at(self, category_name: str, index: int) -> dict[str, Any]:
        """The generated CI at `index`, as the C2 API shows it."""
        spec = self.category(category_name)
        w = self._words(category_name, index)
        model = self._model(category_name, w, index)
        purchased = _PURCHASES_UNTIL_ORDINAL - w[4] % (5 * 365)
        values: dict[str, Any] = {
            "Manufacturer": model.maker,
            "Model": model.model,
            "Description": model.description,
            "SerialNumber": self.serial(category_name, index),
            "AssetTag": f"A{spec.digit}-{index:06d}" if w[13] % 100 >= 3 else None,
            "PurchaseDate": _iso_date(purchased),
            "Cost": round(model.price * (85 + w[5] % 31) / 100, 2),
            "Owner": self._owner(spec, w),
            "Location": spec.locations[w[9] % len(spec.locations)],
            "WarrantyEnd": (_iso_date(purchased + 365 * spec.warranty_years)
                            if w[12] % 100 >= 8 else None),
            "CalibrationDue": _iso_date(purchased + 365),
        }
        if index >= ORDINARY_FROM:
            retired = w[10] % 100 < 2
        else:
            retired = index == MESSY["retired"]
            self._make_messy(category_name, index, values, w)
        return {
            "id": spec.ci_id(index), "cmdb_id": spec.cmdb_id, "category_id": spec.id,
            "name": f"{spec.name_prefix}-{index:05d}", "status": "retired" if retired else "active",
            "fields": {fid: values[name] for fid, name in spec.field_names if name in values},
            "modified_at": iso_utc(self._modified_ts(w)), "version": 1 + w[11] % 12,
        }

    def _make_messy(self, category_name: str, index: int, values: dict[str, Any],
                    w: tuple[int, ...]) -> None:
        if index == MESSY["blank_maker"]:
            values["Manufacturer"] = ""
        elif index == MESSY["whitespace_model"]:
            values["Model"] = "   "
        elif index == MESSY["padded_maker"]:
            values["Manufacturer"] = f"  {values['Manufacturer']} "
        elif index == MESSY["duplicate_serial"]:
            values["SerialNumber"] = self.serial(category_name, DUPLICATE_SERIAL_OF)
        elif index == MESSY["no_description"]:
            del values["Description"]
        elif index == MESSY["padded_owner"] and category_name != "Servers":
            values["Owner"] = f"  {_address(w)} "
        elif index == MESSY["upper_owner"] and category_name != "Servers":
            values["Owner"] = _address(w).upper()

    @staticmethod
    def _owner(spec: CategorySpec, w: tuple[int, ...]) -> str | None:
        if spec.name == "Servers" or w[8] % 100 < 10:
            return None
        return _address(w)

    def hector_seed(self) -> "HectorSeed":
        """Hector's state before any sync: reference data, a few models and unlinked assets."""
        return _hector_seed(self)


@dataclass(frozen=True)
class HectorSeed:
    """Rows as the Hector API shows them, ids included, each list ordered by id."""

    stockrooms: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    attributes: list[dict[str, Any]]
    subcategories: list[dict[str, Any]]
    assets: list[dict[str, Any]]


HECTOR_STOCKROOMS: tuple[str, ...] = ("Main warehouse", "Montréal – Entrepôt B", "東京 倉庫")
HECTOR_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (12, "Printers", "serialized"), (13, "Laptops", "serialized"), (14, "Monitors", "serialized"),
    (15, "Phones", "serialized"), (16, "Servers", "serialized"), (17, "Cables", "lot"),
    (18, "Onboarding kits", "kit"),
)
HECTOR_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("Form factor", "subcategory", "text"), ("Owner", "asset", "text"),
    ("Location", "asset", "text"), ("Warranty end", "asset", "date"),
    ("Serial number", "asset", "text"),
)
FIRST_SUBCATEGORY_ID = 40
FIRST_ASSET_ID = 9001


def _hector_seed(data: SampleData) -> HectorSeed:
    cat = {name: cid for cid, name, _ in HECTOR_CATEGORIES}
    # (category, maker, model, description, price, weight, form factor); the DELL row differs
    # from the C2 data only in case and spaces, as models typed by hand do.
    models = (
        ("Printers", "HP", "LaserJet M404", "Mono laser printer", 329.0, 8.6, "Desktop"),
        ("Laptops", "Lenovo", "ThinkPad T14 Gen 4", "14-inch business laptop", 1449.0, 1.4,
         "Clamshell"),
        ("Laptops", "DELL", "Latitude 5440 ", "14-inch Business Laptop", 1299.0, 1.5, None),
        ("Monitors", "Dell", "U2723QE", "27-inch 4K USB-C monitor", 579.0, 6.6, "Desk stand"),
        ("Cables", "Generic", "USB-C cable 1 m", "USB-C to USB-C cable, 1 m, 100 W", 12.0, 0.05,
         None),
        ("Onboarding kits", "Hector", "Standard onboarding kit",
         "Laptop, monitor, phone and cables for a new hire", 2400.0, 9.0, None),
    )
    # Seed rows are older than anything a sync writes, and ascending in time like real history.
    start = data.reference - 60 * 86400
    subcategories = [
        {"id": FIRST_SUBCATEGORY_ID + k, "category_id": cat[c], "maker": mk, "model": md,
         "description": ds, "note": None, "price": price, "weight": weight, "vendor_sku": None,
         "attributes": {"Form factor": ff} if ff else {}, "updated_at": iso_utc(start + k * 3600),
         "version": 1 + k % 3}
        for k, (c, mk, md, ds, price, weight, ff) in enumerate(models)
    ]
    lenovo = FIRST_SUBCATEGORY_ID + 1
    serial_of = [*UNLINKED_LAPTOPS, AMBIGUOUS_LAPTOP, AMBIGUOUS_LAPTOP]
    assets = [
        {"id": FIRST_ASSET_ID + k, "category_id": cat["Laptops"], "subcategory_id": lenovo,
         "stockroom_id": 1, "title": f"Laptop (legacy inventory {k + 1})",
         "asset_tag": f"LEG-{k + 1:04d}", "note": "Entered by hand before the C2 sync",
         "acquisition_date": "2023-09-01", "assigned_date": None, "return_date": None,
         "maintenance_date": None, "end_of_life_date": "2026-09-01", "status": "in_stock",
         "attributes": {"Serial number": data.serial("Laptops", i)}, "external_refs": [],
         "updated_at": iso_utc(start + 86400 + k * 3600), "version": 1}
        for k, i in enumerate(serial_of)
    ]
    return HectorSeed(
        stockrooms=[{"id": k, "name": n} for k, n in enumerate(HECTOR_STOCKROOMS, 1)],
        categories=[{"id": i, "name": n, "type": t} for i, n, t in HECTOR_CATEGORIES]
        + [{"id": FIRST_COPY_NUMBER + k, "name": c.name, "type": "serialized"}
           for k, c in enumerate(data.categories[len(CATEGORIES):], 1)],
        attributes=[{"id": k, "name": n, "scope": s, "type": t}
                    for k, (n, s, t) in enumerate(HECTOR_ATTRIBUTES, 1)],
        subcategories=subcategories,
        assets=assets,
    )
