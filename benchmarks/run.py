"""hector_sync's performance figures, each printed beside its reference and its goal (met or
missed), as ratios.

    python benchmarks/run.py                    # every figure at 1,000,000 CIs (make bench)
    python benchmarks/run.py --size 20000       # every figure at 20,000 CIs instead
    python benchmarks/run.py --only reconcile,small   # some figures only, in the usual order
    python benchmarks/run.py --no-5x            # growth without its 5× --size row
    python benchmarks/run.py --categories 1,2   # figure 7 over 1 and 2 categories, not 1, 5 and 20
    python benchmarks/run.py --json out.json    # also write the figures as JSON

The figures, by --only name: reconcile (1: our change set of a daily sync, and of a first
sync, beside one hand-written DuckDB statement doing the same work, a bare join and per-record
Python), growth (6: n/100, n/10 and
n CIs, 10k to 1M by default, then 5× n when this machine's free memory and disk hold it),
ingest (2), calls (3, at most 100,000 CIs), writeback (4) and dagster (5, at most 5,000 each),
small (7: what each category adds to a no-change `hector-sync sync`, over 1, 5 and 20 categories
of 300 CIs whatever the size, and the demo's own configuration resynced).

Each measurement runs in a fresh child process, so its wall time and peak RSS are its own; the
simulators run in their own process too, so they do not share our interpreter's GIL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import requests
import yaml

from hector_sync.c2 import C2Client
from hector_sync.config import Direction, SyncConfig, load_config
from hector_sync.demo import DEMO_CONFIG_PATH, DEMO_ENV, DEMO_SIZE
from hector_sync.reconcile import Reconciler
from hector_sync.reconcile.changes import item_counts
from hector_sync.reconcile.match import digest_assets
from hector_sync.reconcile.normalize import lit
from hector_sync.simulators.sample_data import CATEGORIES_BY_NAME, MAX_COPIES, copies_of
from hector_sync.store import Store, create_schema, tune
from hector_sync.sync import CategorySync, full_read_day, open_clients
from hector_sync.writeback.hector import HectorWriteback

ATTRIBUTES = {("asset", "Serial number"): "text", ("asset", "Owner"): "text", ("asset", "Location"): "text"}
C2_TYPES = {f.name: f.type for f in CATEGORIES_BY_NAME["Printers"].fields}
# The printers mapping spelled out for the peers written by hand: Hector asset field or attribute
# → (C2 field, kind), and subcategory field → C2 field.
ASSET_FIELDS = {
    "title": ("Name", "text"), "asset_tag": ("AssetTag", "text"), "acquisition_date": ("PurchaseDate", "date"),
    "end_of_life_date": ("WarrantyEnd", "date"), "Serial number": ("SerialNumber", "text"),
    "Owner": ("Owner", "user"), "Location": ("Location", "text"),
}
MODEL_FIELDS = {"maker": "Manufacturer", "model": "Model", "description": "Description", "price": "Cost"}
MODELS = 40
GROWTH_FACTOR = 5  # growth's last row: this many times --size, when it fits
MEMORY_MARGIN = 0.8  # the share of free memory or disk a run may count on, the rest for the others
SMALL_COUNTS = (1, 5, 20)  # categories per no-change resync, figure 7
SMALL_CIS = 300  # CIs per small category: the demo's size
WRITEBACK_LIMIT_PER_S = 50.0
WRITEBACK_LATENCY_S = 0.05


@dataclass
class Measured:
    result: Any
    seconds: float
    peak_rss_mb: float


@dataclass
class Reconciled:
    """The benchmark's tables at one size (`build`) and our change set of them (`ours`)."""

    path: str
    build: Measured
    ours: Measured


@dataclass
class Bench:
    """What the figures share: the size, a scratch folder, whether growth may try 5× the size,
    figure 7's numbers of categories, and the reconciliations measured so far (figure 1's is
    also a row of figure 6's)."""

    n: int
    work: Path
    five_x: bool = True
    small_counts: tuple[int, ...] = SMALL_COUNTS
    reconciled: dict[int, Reconciled] = field(default_factory=dict)

    def reconcile(self, n: int) -> Reconciled:
        """Build the tables of n CIs and measure our change set of them, once per size."""
        if n not in self.reconciled:
            path = str(self.work / f"reconcile-{n}.duckdb")
            build = measured(build_tables, path, n)
            ours = measured(reconcile_once, path, printers_reconciler())
            check_counts(ours.result, n)
            self.reconciled[n] = Reconciled(path, build, ours)
        return self.reconciled[n]


def _child(fn: Callable[..., Any], args: tuple[Any, ...]) -> Measured:
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    return Measured(result, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measured(fn: Callable[..., Any], *args: Any) -> Measured:
    """Run fn(*args) in a fresh process: its own wall time and peak resident memory. (A process
    pool from concurrent.futures: a child that dies raises BrokenProcessPool, where a
    multiprocessing.Pool would wait for it forever.)"""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, fn, args).result()


# --- 1 and 6: reconciliation ------------------------------------------------------------------


def printers_category() -> Any:
    """The demo's printers mapping: the reconciliation's work depends on the mapping only."""
    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)
    return load_config(DEMO_CONFIG_PATH).category("printers")


CI_COLUMNS = """
    'ci-' || lpad(i::VARCHAR, 9, '0') AS ci_id, 'PRN-' || i AS name, 'Maker ' || ((i % {models}) % 7) AS maker,
    'Model ' || (i % {models}) AS model, 'Printer model ' || (i % {models}) AS description,
    'SN' || lpad(i::VARCHAR, 9, '0') AS serial, 'A-' || i AS tag,
    strftime(DATE '2020-01-01' + (i % 1500)::INTEGER, '%Y-%m-%d') AS bought,
    strftime(DATE '2025-01-01' + (i % 1500)::INTEGER, '%Y-%m-%d') AS ends,
    'user' || (i % 5000) || '@example.com' AS owner, 'Office ' || (i % 30) AS location,
    (100.0 + i % {models})::VARCHAR AS cost
""".format(models=MODELS)
CHANGED_TAG = "CASE WHEN i % 100 = 7 THEN 'A-OLD-' || i ELSE tag END"  # 1% of the tags: Hector still holds the old one


def list_cis(con: duckdb.DuckDBPyConnection, n: int, *, today: bool) -> None:
    """The C2 listing, as a full read leaves it. Yesterday's agreed with Hector; today's has 1%
    of the asset tags changed, 0.5% new CIs (beyond n) and 0.1% of the CIs gone (i % 1000 = 3)."""
    con.execute("DELETE FROM c2_ci")
    listed = f"range({n + n // 200}) t(i)) c WHERE NOT (i % 1000 = 3 AND i < {n})" if today else f"range({n}) t(i)) c"
    con.execute(f"""
        INSERT INTO c2_ci
        SELECT 'printers', ci_id, name, 'active', TIMESTAMPTZ '2026-11-01 00:00:00+00', 1,
               MAP(['Manufacturer', 'Model', 'Description', 'SerialNumber', 'AssetTag', 'PurchaseDate',
                    'WarrantyEnd', 'Owner', 'Location', 'Cost'],
                   [maker, model, description, serial, {'tag' if today else CHANGED_TAG}, bought, ends, owner,
                    location, cost])
        FROM (SELECT i, {CI_COLUMNS} FROM {listed}""")


def build_tables(path: str, n: int) -> dict[str, int]:
    """n CIs and n linked assets, as a daily sync finds them: yesterday's listing derived (the
    last sync), and today's read in (1% changed, 0.5% new CIs, 0.1% of the CIs gone)."""
    con = tune(duckdb.connect(path))
    create_schema(con)
    con.execute(f"""
        INSERT INTO hector_subcategory (category_key, id, category_id, maker, model, description, price,
                                        attributes, version)
        SELECT 'printers', 1000 + m, 12, 'Maker ' || (m % 7), 'Model ' || m, 'Printer model ' || m,
               100.0 + m, MAP {{}}, 1
        FROM range({MODELS}) t(m)""")
    con.execute(f"""
        INSERT INTO hector_asset (category_key, id, category_id, subcategory_id, stockroom_id, title, asset_tag,
                                  acquisition_date, end_of_life_date, status, attributes, c2_ref, external_refs, version)
        SELECT 'printers', 100000000 + i, 12, 1000 + i % {MODELS}, 1, name, {CHANGED_TAG}, bought, ends, 'in_stock',
               MAP(['Serial number', 'Owner', 'Location'], [serial, owner, location]), ci_id,
               '[{{"source": "c2", "id": "' || ci_id || '"}}]', 1
        FROM (SELECT i, {CI_COLUMNS} FROM range({n}) t(i))""")
    list_cis(con, n, today=False)
    yesterday = printers_reconciler()
    yesterday.derive(con)
    con.execute(digest_assets(yesterday.plan))  # as yesterday's change set left them
    list_cis(con, n, today=True)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("c2_ci", "hector_asset")}
    con.close()
    return counts


def printers_reconciler() -> Reconciler:
    return Reconciler.for_category(printers_category(), ATTRIBUTES, "Main warehouse", C2_TYPES)


def reconcile_once(path: str, rec: Reconciler) -> dict[str, int]:
    """A daily sync's reconciliation: derive (the CIs that changed since the last one), then the
    change set. `rec` comes built: loading the configuration is the run's, once per process
    (figure 7), and its first load imports Dagster to check the cron (0.4 s)."""
    con = tune(duckdb.connect(path))  # the settings every Store connection has
    rec.derive(con)
    changes = rec.changes(con, Direction.C2_TO_HECTOR, full_read=True)
    con.close()
    return item_counts(changes.rows, Direction.C2_TO_HECTOR, changes.unchanged)


def first_reconcile(path: str) -> Measured:
    """`reconcile_once` as a category's first sync does it, every CI derived (on a copy of the tables)."""
    first = f"{path}.first.duckdb"
    shutil.copy(path, first)
    con = duckdb.connect(first)
    con.execute("DELETE FROM derive_state")
    con.execute("DELETE FROM derived_ci")
    con.close()
    try:
        return measured(reconcile_once, first, printers_reconciler())
    finally:
        Path(first).unlink()


def outer_join_floor(path: str) -> int:
    con = tune(duckdb.connect(path, read_only=True))
    rows = con.execute("SELECT count(*) FROM c2_ci c FULL OUTER JOIN hector_asset h ON h.c2_ref = c.ci_id").fetchone()
    con.close()
    return int(rows[0])


def _name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _trimmed(expr: str) -> str:
    """Trimmed, empty meaning null: trim() of spaces, the cheapest form a hand-written query takes."""
    return f"nullif(trim({expr}), '')"


def wide_tables(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """The benchmark's snapshot in memory, one column per mapped field: C2 ITSM's values the text
    its API sends, Hector's ids, prices and dates typed as its API types them."""
    def hector(name: str, kind: str) -> str:
        value = f"attributes[{lit(name)}]" if ("asset", name) in ATTRIBUTES else name
        return f"TRY_CAST({value} AS DATE)" if kind == "date" else value

    c2 = ", ".join(f"fields[{lit(f)}] AS {_name(f)}" for f in C2_TYPES)
    assets = ", ".join(f"{hector(name, kind)} AS {_name(name)}" for name, (_, kind) in ASSET_FIELDS.items())
    con.execute(f"""
        ATTACH {lit(path)} AS snap (READ_ONLY);
        CREATE TABLE ci AS SELECT ci_id, status, name AS "Name", {c2} FROM snap.c2_ci;
        CREATE TABLE asset AS SELECT id, version, c2_ref, subcategory_id, status, {assets} FROM snap.hector_asset;
        CREATE TABLE subcategory AS SELECT id, version, maker, model, description, price FROM snap.hector_subcategory;
        DETACH snap""")


def same_work_statement() -> str:
    """Our change set toward Hector, written by hand for this mapping as one statement: CIs
    paired with their assets (full outer join: creates and missing items), text trimmed, the
    model identity case-folded, the CI's number and dates parsed, each CI's subcategory found
    by that identity; one row per differing field, per create and per missing item. What ours
    does besides (rejects and skips with reasons, asset tag clashes, identify_by and the other
    pairings, drift, reactivation, a row per unchanged CI, each row's request, the sort) is left
    out, so this is a floor."""
    keys = [k for k in MODEL_FIELDS if k != "price"]
    identity = ", ".join(f"lower({_trimmed(k)}) AS {k}" for k in keys)
    same_model = " AND ".join(f"s.{k} = lower({_trimmed('ci.' + _name(MODEL_FIELDS[k]))})" for k in keys)
    price = f"TRY_CAST({_trimmed('ci.' + _name(MODEL_FIELDS['price']))} AS DOUBLE)"

    def new(source: str, kind: str) -> str:
        value = _trimmed("ci." + _name(source))
        return f"TRY_CAST({value} AS DATE)" if kind == "date" else value

    def old(name: str, kind: str) -> str:
        return "a." + _name(name) if kind == "date" else _trimmed("a." + _name(name))

    def differs(name: str, kind: str) -> str:
        a, b = _name("old " + name), _name("new " + name)
        return f"lower({a}) IS DISTINCT FROM lower({b})" if kind == "user" else f"{a} IS DISTINCT FROM {b}"

    desired = ", ".join(f"{new(source, kind)} AS {_name('new ' + name)}" for name, (source, kind) in ASSET_FIELDS.items())
    held = ", ".join(f"{old(name, kind)} AS {_name('old ' + name)}" for name, (_, kind) in ASSET_FIELDS.items())
    updates = "".join(
        f"""
        UNION ALL SELECT 'update_asset', ci_id, id, {lit(name)}, CAST({_name('old ' + name)} AS VARCHAR),
                         CAST({_name('new ' + name)} AS VARCHAR)
        FROM p WHERE ci_id IS NOT NULL AND id IS NOT NULL AND {differs(name, kind)}"""
        for name, (_, kind) in ASSET_FIELDS.items())
    return f"""
        WITH s AS (SELECT id, price, {identity} FROM subcategory),
        c AS (
            SELECT ci.ci_id, s.id AS subcategory, s.price AS model_price, {price} AS price, {desired}
            FROM ci LEFT JOIN s ON {same_model}
            WHERE ci.status IS DISTINCT FROM 'retired'
        ),
        h AS (SELECT a.id, a.c2_ref, a.subcategory_id, {held} FROM asset a),
        p AS MATERIALIZED (SELECT * FROM c FULL OUTER JOIN h ON h.c2_ref = c.ci_id)
        SELECT 'create_asset' AS action, ci_id AS item, NULL::BIGINT AS target_id, NULL::VARCHAR AS field,
               NULL::VARCHAR AS old, NULL::VARCHAR AS new
        FROM p WHERE id IS NULL
        UNION ALL SELECT 'missing', c2_ref, id, NULL, NULL, NULL FROM p WHERE ci_id IS NULL{updates}
        UNION ALL SELECT 'move_asset', ci_id, id, 'subcategory', CAST(subcategory_id AS VARCHAR),
                         CAST(subcategory AS VARCHAR)
        FROM p WHERE ci_id IS NOT NULL AND id IS NOT NULL AND subcategory IS DISTINCT FROM subcategory_id
        UNION ALL SELECT DISTINCT 'update_subcategory', CAST(subcategory AS VARCHAR), subcategory, 'price',
                         CAST(model_price AS VARCHAR), CAST(price AS VARCHAR)
        FROM p WHERE subcategory IS NOT NULL AND price IS DISTINCT FROM model_price
    """


def same_work_floor(path: str) -> dict[str, Any]:
    """`same_work_statement` over `wide_tables`, with DuckDB's settings as ours has them: the
    statement's own seconds (the copy is setup) and its items per action. Its rows are
    materialized in a temp table (CREATE TEMP TABLE … AS), where ours fetches its rows into
    polars: either way every row is made."""
    con = tune(duckdb.connect())
    con.execute("SET preserve_insertion_order = false")  # as ours runs
    wide_tables(con, path)
    started = time.perf_counter()
    con.execute(f"CREATE TEMP TABLE change_rows AS {same_work_statement()}")
    seconds = time.perf_counter() - started
    counts = dict(con.execute("SELECT action, count(DISTINCT item) FROM change_rows GROUP BY action").fetchall())
    rows = int(con.execute("SELECT count(*) FROM change_rows").fetchone()[0])
    con.close()
    return {"seconds": seconds, "counts": counts, "rows": rows}


def _canon(value: Any, kind: str) -> str | None:
    text = None if value is None else str(value).strip() or None
    if text is None or kind == "text":
        return text
    try:
        return str(float(text)) if kind == "number" else date.fromisoformat(text).isoformat()
    except ValueError:
        return None


def naive_reconcile(path: str) -> dict[str, int]:
    """The straightforward peer: every record into Python dicts, compared field by field in loops."""
    fields = {target: source for target, (source, _) in ASSET_FIELDS.items()}
    con = tune(duckdb.connect(path, read_only=True))
    models = {row[0]: row[1:] for row in con.execute("SELECT id, maker, model, description FROM hector_subcategory").fetchall()}
    assets = {}
    for ref, title, tag, bought, ends, attrs, sub in con.execute(
            "SELECT c2_ref, title, asset_tag, acquisition_date, end_of_life_date, attributes, subcategory_id "
            "FROM hector_asset").fetchall():
        assets[ref] = {"title": title, "asset_tag": tag, "acquisition_date": bought, "end_of_life_date": ends,
                       **attrs, "model": tuple(m.lower() for m in models[sub])}
    counts: dict[str, int] = {}
    for ci_id, name, values in con.execute("SELECT ci_id, name, fields FROM c2_ci").fetchall():
        values = dict(values) | {"Name": name}
        asset = assets.pop(ci_id, None)
        if asset is None:
            action = "create_asset"
        else:
            model = tuple((values.get(k) or "").strip().lower() for k in ("Manufacturer", "Model", "Description"))
            differs = any(
                _canon(asset.get(target), "date" if "date" in target else "text") != _canon(values.get(source), "date" if "date" in target else "text")
                for target, source in fields.items())
            action = "update_asset" if differs or model != asset["model"] else "unchanged"
        counts[action] = counts.get(action, 0) + 1
    counts["missing"] = len(assets)
    con.close()
    return counts


def check_counts(found: dict[str, int], n: int) -> dict[str, int]:
    """The items per action that n CIs of `build_tables` must give (n/100 updated, n/200
    created, n/1000 missing), asserted within 2%: a peer that differs did other work."""
    expected = {"update_asset": n // 100, "create_asset": n // 200, "missing": n // 1000}
    got = {k: found.get(k, 0) for k in expected}
    assert all(abs(got[k] - v) <= max(2, v // 50) for k, v in expected.items()), (got, expected)
    return got


def figure_reconcile(bench: Bench) -> dict[str, Any]:
    r = bench.reconcile(bench.n)
    first = first_reconcile(r.path)
    same_work = measured(same_work_floor, r.path)
    check_counts(same_work.result["counts"], bench.n)
    join = measured(outer_join_floor, r.path)
    naive = measured(naive_reconcile, r.path)
    return {"n": bench.n, "ours": r.ours, "first": first, "same_work": same_work.result, "join": join, "naive": naive,
            "counts": check_counts(r.ours.result, bench.n), "first_counts": check_counts(first.result, bench.n)}


def growth_sizes(n: int) -> list[int]:
    """10k, 100k and 1M at the default size; n/100, n/10 and n (at least 100 CIs) at others."""
    return [10_000, 100_000, n] if n == 1_000_000 else sorted({max(n // 100, 100), max(n // 10, 100), n})


def free_memory_mb() -> float:
    """What a new process can have now (MemAvailable): others share this machine."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def scaled_up(base: Reconciled, factor: int, work: Path) -> tuple[dict[str, float], str | None]:
    """What `factor` times base's CIs would take, scaled linearly from base's run (memory, disk
    and time grow no faster than the CIs past the fixed costs), and why that does not fit here
    now; None when it does."""
    need = {"peak_rss_mb": factor * max(base.build.peak_rss_mb, base.ours.peak_rss_mb),
            "disk_mb": factor * Path(base.path).stat().st_size / 2**20,
            "minutes": factor * (base.build.seconds + base.ours.seconds) / 60}
    have = {"peak_rss_mb": MEMORY_MARGIN * free_memory_mb(), "disk_mb": MEMORY_MARGIN * shutil.disk_usage(work).free / 2**20}
    short = [f"needs about {need[k]:,.0f} MB of {what}, where {have[k]:,.0f} MB ({MEMORY_MARGIN:.0%} of the free) may be used"
             for k, what in (("peak_rss_mb", "memory"), ("disk_mb", "disk")) if need[k] > have[k]]
    return need, "; ".join(short) or None


def figure_growth(bench: Bench) -> dict[str, Any]:
    """Our change set at growth_sizes, then at GROWTH_FACTOR × n when it fits. A failure there
    is reported, not raised: it is what the row measures, and the other figures still count."""
    rows = {s: bench.reconcile(s) for s in growth_sizes(bench.n)}
    big = GROWTH_FACTOR * bench.n
    need, skipped = scaled_up(rows[bench.n], GROWTH_FACTOR, bench.work)
    skipped = skipped if bench.five_x else "left out (--no-5x)"
    failed = None
    if skipped is None:
        try:
            rows[big] = bench.reconcile(big)
        except Exception as exc:  # whatever the child raised (out of memory, killed) is the row's outcome
            failed = f"{type(exc).__name__}: {exc}"
    return {"rows": rows, "big": big, "need": need, "skipped": skipped, "failed": failed}


# --- simulators in their own process -----------------------------------------------------------


@contextmanager
def simulators(sizes: dict[str, int], *, size: int = 0, copies: int = 0) -> Iterator[tuple[str, str]]:
    """Both simulators: `sizes` CIs in the categories named, `size` in every other one, plus
    `copies` copies of Printers ("Printers 01"…), without faults (every call answered at once)."""
    args = [sys.executable, "-m", "hector_sync.simulators", "--c2-port", "0", "--hector-port", "0",
            "--size", str(size), "--copies", str(copies)]
    args += [a for name, count in sizes.items() for a in ("--sizes", f"{name}={count}")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().rsplit(" ", 1)[-1].strip() for _ in range(2)]
        yield urls[0], urls[1]
    finally:
        proc.kill()  # SIGKILL: the only signal a child cannot have inherited as ignored
        proc.wait(timeout=30)


def config_for(c2_url: str, hector_url: str, work: Path, name: str, keys: dict[str, str] | None,
               hector_extra: dict[str, Any] | None = None) -> Path:
    """The demo configuration pointed at these simulators; `keys` maps category key → C2/Hector
    name, each mapped as the demo maps printers (None: the demo's own categories)."""
    data = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))
    data["c2"]["url"], data["hector"]["url"] = c2_url, hector_url
    data["hector"].update(hector_extra or {})
    data["storage"]["duckdb_path"] = str(work / name / "hector_sync.duckdb")
    if keys is not None:
        template = next(c for c in data["categories"] if c["key"] == "printers")
        data["categories"] = [template | {"key": k, "c2_category": v, "hector_category": v} for k, v in keys.items()]
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def sim_stats(url: str, reset: bool = False) -> dict[str, Any]:
    if reset:
        requests.post(f"{url}/_sim/stats/reset", timeout=10).raise_for_status()
        return {}
    return requests.get(f"{url}/_sim/stats", timeout=10).json()


def set_faults(url: str, **switches: Any) -> None:
    requests.put(f"{url}/_sim/faults", json=switches, timeout=10).raise_for_status()


# --- 2: snapshot ingestion ---------------------------------------------------------------------


def download_floor(c2_url: str, category: str) -> int:
    with C2Client(c2_url, "svc-hector", DEMO_ENV["HECTOR_SYNC_DEMO_C2_PASSWORD"]) as c2:
        return sum(len(page) for page in c2.iter_ci_pages("cmdb-1", category))


@contextmanager
def category_steps(config_path: str, key: str) -> Iterator[CategorySync]:
    """The category's sync steps, called directly, on one client per system as a run has."""
    config = load_config(config_path)
    with open_clients(config) as (c2, hector):
        sync = CategorySync(config, config.category(key), Store(config.storage.duckdb_path), c2, hector, log=lambda _: None)
        sync.resolve_catalog()
        yield sync


def ingest(config_path: str, key: str) -> int:
    with category_steps(config_path, key) as sync:
        snap, _ = sync.snapshot_c2("full")
    return snap.table_rows


def figure_ingest(n: int, work: Path) -> dict[str, Any]:
    small = max(n // 10, 1)
    with simulators({"Printers": n, "Monitors": small}) as (c2_url, hector_url):
        path = str(config_for(c2_url, hector_url, work, "ingest", {"printers": "Printers", "monitors": "Monitors"}))
        floor = measured(download_floor, c2_url, CATEGORIES_BY_NAME["Printers"].id)
        ours = measured(ingest, path, "printers")
        ours_small = measured(ingest, path, "monitors")
    assert floor.result == ours.result == n, (floor.result, ours.result)
    return {"n": n, "ours": ours, "floor": floor, "small": ours_small, "small_n": small}


# --- 3 and 5: API calls of whole syncs, and Dagster's overhead -----------------------------------


def cli_sync(config_path: Path, *keys: str, full: bool = True) -> float:
    """Seconds of one `hector-sync sync` of these categories (every one without keys)."""
    started = time.perf_counter()
    hector_sync = Path(sys.executable).with_name("hector-sync")
    args = ["--full"] if full else []
    args += [a for key in keys for a in ("--category", key)]
    subprocess.run([str(hector_sync), "--config", str(config_path), "sync", *args],
                   check=True, capture_output=True, env=os.environ | DEMO_ENV)
    return time.perf_counter() - started


def calls(url: str) -> tuple[int, int]:
    """(reads, writes) the simulator answered since its statistics were reset; logins aside."""
    routes = sim_stats(url)["by_route"]
    writes = sum(c for r, c in routes.items() if r.split()[0] in ("POST", "PATCH") and not r.endswith("/auth/login"))
    reads = sum(c for r, c in routes.items() if r.split()[0] == "GET")
    return reads, writes


def figure_api_calls(n: int, work: Path) -> dict[str, Any]:
    m = min(n, 100_000)
    found: dict[str, Any] = {"n": m}
    with simulators({"Printers": m}) as (c2_url, hector_url):
        path = config_for(c2_url, hector_url, work, "calls", {"printers": "Printers"})
        for label in ("first", "noop", "one_percent"):
            if label == "one_percent":
                touch_one_percent(load_config(path), m)
            for url in (c2_url, hector_url):
                sim_stats(url, reset=True)
            cli_sync(path, "printers")
            found[label] = {side: calls(url) for side, url in (("c2", c2_url), ("hector", hector_url))}
    c2_pages = found["noop"]["c2"][0]
    found["naive_noop"] = c2_pages + 2 * m  # one GET and one PATCH per CI, after the C2 pages
    return found


def touch_one_percent(config: SyncConfig, m: int) -> None:
    """Change the asset tag of 1% of the CIs in C2 ITSM, through its API."""
    with C2Client.from_settings(config.c2) as c2:
        field = next(f.id for f in c2.list_fields("cmdb-1", "cat-7") if f.name == "AssetTag")
        for i in range(0, m, 100):
            ci = c2.get_ci(f"ci-1{i:07d}")
            if ci is not None:
                c2.update_ci(ci["id"], ci["version"], fields={field: f"A-CHANGED-{i}"})


def direct_sync(config_path: str, key: str) -> float:
    """The same work as `hector-sync sync --category KEY`, by calling the steps directly."""
    started = time.perf_counter()
    with category_steps(config_path, key) as sync:
        sync.snapshot_c2("full")
        sync.snapshot_hector("full")
        sync.derive(Direction.C2_TO_HECTOR)
        sync.plan(Direction.C2_TO_HECTOR)
        sync.apply(Direction.C2_TO_HECTOR, allow_large_change=False)
    return time.perf_counter() - started


def figure_dagster_overhead(n: int, work: Path) -> dict[str, float]:
    m = min(n, 5_000)
    with simulators({"Laptops": m}) as (c2_url, hector_url):
        through_dagster = cli_sync(config_for(c2_url, hector_url, work, "dagster", {"laptops": "Laptops"}), "laptops")
    with simulators({"Laptops": m}) as (c2_url, hector_url):
        path = config_for(c2_url, hector_url, work, "direct", {"laptops": "Laptops"})
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"import run; run.direct_sync({str(path)!r}, 'laptops')"], check=True, env=os.environ | DEMO_ENV)
        direct = time.perf_counter() - started
    return {"n": m, "dagster_s": through_dagster, "direct_s": direct}


# --- 4: writeback throughput -------------------------------------------------------------------


def writeback(config_path: str, key: str, workers: int) -> dict[str, float]:
    """Plan a first sync of the category, then time its writeback alone."""
    with category_steps(config_path, key) as sync:
        config = sync.config
        sync.snapshot_c2("full")
        sync.snapshot_hector("full")
        sync.derive(Direction.C2_TO_HECTOR)
        plan, changes = sync.plan(Direction.C2_TO_HECTOR)
        set_faults(config.hector.url, latency_s=WRITEBACK_LATENCY_S, rate_limit_per_s=WRITEBACK_LIMIT_PER_S, retry_after_s=1)
        sim_stats(config.hector.url, reset=True)
        writer = HectorWriteback(store=sync.store, plan=sync.reconciler.plan, applying=plan, run_id=None, log=lambda _: None,
                                 workers=workers, hector=sync.hector, resolved=sync.resolved)
        started = time.perf_counter()
        writer.run(changes)
        seconds = time.perf_counter() - started
    set_faults(config.hector.url)
    statuses = sim_stats(config.hector.url)["by_status"]
    answered = sum(statuses.values())
    created = sum(n for outcome, n in writer.outcomes.items() if outcome in ("created", "already_there"))
    return {"calls": answered, "seconds": seconds, "rate": answered / seconds, "created": created,
            "share_429": statuses.get("429", 0) / answered, "lost": writer.outcomes.get("refused", 0)}


def figure_writeback(n: int, work: Path) -> dict[str, Any]:
    m = min(n, 5_000)
    sequential_m = min(300, max(m // 10, 50))  # sequential is slow by design: enough to measure its rate
    with simulators({"Printers": m, "Monitors": sequential_m}) as (c2_url, hector_url):
        extra = {"rate_limit_per_s": WRITEBACK_LIMIT_PER_S}
        path = str(config_for(c2_url, hector_url, work, "writeback", {"printers": "Printers", "monitors": "Monitors"}, extra))
        ours = measured(writeback, path, "printers", 8).result
        sequential = measured(writeback, path, "monitors", 1).result
    return {"n": m, "ours": ours, "sequential": sequential}


# --- 7: what each category adds to a sync ------------------------------------------------------


def noop_resync(config_path: Path, c2_url: str, hector_url: str) -> dict[str, float]:
    """Every category of the configuration: a first `sync --full`, then a timed `sync` of the
    unchanged data, and the writes that resync made (none, when it is one)."""
    for url in (c2_url, hector_url):
        set_faults(url)  # none: every call answered at once, so what is measured is ours
    first = cli_sync(config_path)
    for url in (c2_url, hector_url):
        sim_stats(url, reset=True)
    resync = cli_sync(config_path, full=False)
    return {"first_s": first, "resync_s": resync, "resync_writes": sum(calls(url)[1] for url in (c2_url, hector_url))}


def small_resync(count: int, work: Path) -> dict[str, float]:
    """`noop_resync` of `count` small categories: the simulators' copies of Printers."""
    names = [spec.name for spec in copies_of(count)]
    with simulators(dict.fromkeys(names, SMALL_CIS), copies=count) as (c2_url, hector_url):
        keys = {name.lower().replace(" ", "-"): name for name in names}
        return noop_resync(config_for(c2_url, hector_url, work, f"small-{count}", keys), c2_url, hector_url)


def demo_resync(work: Path) -> dict[str, Any]:
    """`noop_resync` of the demo's configuration as it is, against simulators of its sizes."""
    with simulators({}, size=DEMO_SIZE) as (c2_url, hector_url):
        path = config_for(c2_url, hector_url, work, "demo", None)
        found: dict[str, Any] = noop_resync(path, c2_url, hector_url)
    config = load_config(path)
    synced = sum(c.direction is not Direction.NONE for c in config.categories)
    return found | {"synced": synced, "parked": len(config.categories) - synced, "cis": synced * DEMO_SIZE,
                    "full_read_day": full_read_day(config, datetime.now(UTC))}


def dagster_alone(count: int, work: Path) -> float:
    """Seconds of `empty_runs.py`: one run per each of `count` categories whose steps do nothing,
    on an instance that a first, untimed run made (as a resync finds it)."""
    home = work / f"empty-{count}"
    script = [sys.executable, str(Path(__file__).with_name("empty_runs.py"))]
    subprocess.run([*script, "1", str(home)], check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([*script, str(count), str(home)], check=True, capture_output=True)
    return time.perf_counter() - started


def figure_small(work: Path, counts: tuple[int, ...]) -> dict[str, Any]:
    return {"counts": {count: small_resync(count, work) | {"dagster_alone_s": dagster_alone(count, work)}
                       for count in counts},
            "demo": demo_resync(work)}


# --- report -----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def goal(text: str, met: bool) -> str:
    return f"(goal {text}: {'met' if met else 'missed'})"


def report_reconcile(bench: Bench) -> dict[str, Any]:
    r, n = figure_reconcile(bench), bench.n
    ours, first, same_work, join, naive = r["ours"], r["first"], r["same_work"]["seconds"], r["join"].seconds, r["naive"]
    print("1. Reconciliation: the full change set of one category, snapshots in DuckDB")
    print(f"   {n:,} CIs vs {n:,} linked assets, 1% changed / 0.5% new / 0.1% gone -> {r['counts']}")
    print(f"   ours, a daily sync (the CIs changed since the last sync derived, then the change set) "
          f"{ours.seconds:6.2f} s  peak {ours.peak_rss_mb:6.0f} MB {goal('< 1,024 MB', ours.peak_rss_mb < 1024)}")
    print(f"   same work as one hand-written DuckDB statement over wide tables {same_work:6.2f} s "
          f"({r['same_work']['rows']:,} rows)   ours/floor {ratio(ours.seconds, same_work)} "
          f"{goal('≤ 3×', ours.seconds <= 3 * same_work)}")
    print(f"   ours, a first sync (every CI derived) {first.seconds:6.2f} s  peak {first.peak_rss_mb:6.0f} MB   "
          f"first/floor {ratio(first.seconds, same_work)}")
    print(f"   bare DuckDB full outer join of the two tables {join:6.2f} s   ours/join {ratio(ours.seconds, join)}")
    print(f"   naive per-record Python {naive.seconds:8.2f} s  peak {naive.peak_rss_mb:6.0f} MB   "
          f"naive/ours {ratio(naive.seconds, ours.seconds)}\n")
    return {"reconcile_s": ours.seconds, "reconcile_same_work_floor_s": same_work, "reconcile_floor_s": join,
            "reconcile_peak_rss_mb": ours.peak_rss_mb, "reconcile_first_sync_s": first.seconds,
            "reconcile_first_sync_peak_rss_mb": first.peak_rss_mb, "naive_reconcile_s": naive.seconds}


def report_growth(bench: Bench) -> dict[str, Any]:
    g = figure_growth(bench)
    rows: dict[int, Reconciled] = g["rows"]
    table = {s: {"seconds": r.ours.seconds, "peak_rss_mb": r.ours.peak_rss_mb, "us_per_ci": r.ours.seconds / s * 1e6,
                 "mb_per_1k_cis": r.ours.peak_rss_mb / s * 1000} for s, r in rows.items()}
    print("6. Growth of the reconciliation (ours, as in figure 1; building the tables not counted)")
    print(f"   {'CIs':>10} {'seconds':>9} {'peak MB':>8} {'µs per CI':>10} {'MB per 1k CIs':>14}")
    for s, row in table.items():
        print(f"   {s:>10,} {row['seconds']:>9.2f} {row['peak_rss_mb']:>8.0f} {row['us_per_ci']:>10.1f} "
              f"{row['mb_per_1k_cis']:>14.2f}")
    need = g["need"]
    estimate = (f"estimated from {bench.n:,} CIs: peak {need['peak_rss_mb']:,.0f} MB, {need['disk_mb']:,.0f} MB "
                f"of disk, about {need['minutes']:.0f} min")
    if g["skipped"]:
        print(f"   {g['big']:>10,} skipped: {g['skipped']} ({estimate})")
    elif g["failed"]:
        print(f"   {g['big']:>10,} failed: {g['failed']} ({estimate})")
    else:
        print(f"   ({g['big']:,} CIs {estimate}: it fitted)")
    if len(table) > 1:
        (small, before), (large, last) = list(table.items())[-2:]
        print(f"   µs per CI from {small:,} to {large:,} CIs: {ratio(last['us_per_ci'], before['us_per_ci'])} "
              f"{goal('≤ 1.25×, near-linear', last['us_per_ci'] <= 1.25 * before['us_per_ci'])}")
    print()
    growth = {str(s): row for s, row in table.items()}
    if g["skipped"] or g["failed"]:
        growth[str(g["big"])] = {"skipped": g["skipped"], "failed": g["failed"], "estimate": need}
    return {"growth": growth}


def report_ingest(bench: Bench) -> dict[str, Any]:
    i, n = figure_ingest(bench.n, bench.work), bench.n
    flat = i["ours"].peak_rss_mb <= 1.25 * i["small"].peak_rss_mb
    print("2. Snapshot ingestion from the C2 simulator into DuckDB")
    print(f"   ours  {i['ours'].seconds:8.2f} s  {n / i['ours'].seconds:9,.0f} CIs/s  peak {i['ours'].peak_rss_mb:6.0f} MB")
    print(f"   floor (download and decode only) {i['floor'].seconds:6.2f} s   ours/floor "
          f"{ratio(i['ours'].seconds, i['floor'].seconds)} {goal('≤ 1.3×', i['ours'].seconds <= 1.3 * i['floor'].seconds)}")
    print(f"   memory: {i['small_n']:,} CIs peak {i['small'].peak_rss_mb:.0f} MB vs {n:,} CIs peak "
          f"{i['ours'].peak_rss_mb:.0f} MB {goal('flat, within 1.25×', flat)}\n")
    return {"ingest_s": i["ours"].seconds, "ingest_floor_s": i["floor"].seconds,
            "ingest_peak_rss_mb": i["ours"].peak_rss_mb, "ingest_small_peak_rss_mb": i["small"].peak_rss_mb}


def report_calls(bench: Bench) -> dict[str, Any]:
    a = figure_api_calls(bench.n, bench.work)
    print(f"3. API calls of whole syncs of {a['n']:,} CIs (reads, writes) per system")
    for label in ("first", "noop", "one_percent"):
        print(f"   {label:<12} C2 ITSM {a[label]['c2']}  Hector {a[label]['hector']}")
    noop_reads = a["noop"]["c2"][0] + a["noop"]["hector"][0]
    noop_writes = a["noop"]["c2"][1] + a["noop"]["hector"][1]
    print(f"   no-change resync: {noop_reads} reads, {noop_writes} writes {goal('no writes', noop_writes == 0)}; "
          f"naive peer (GET + PATCH per CI): {a['naive_noop']:,} calls, naive/ours "
          f"{ratio(a['naive_noop'], noop_reads + noop_writes)}\n")
    return {"noop_resync_write_calls": noop_writes, "noop_resync_read_calls": noop_reads,
            "naive_noop_resync_calls": a["naive_noop"], "api_calls": a}


def report_writeback(bench: Bench) -> dict[str, Any]:
    w = figure_writeback(bench.n, bench.work)
    ours, seq = w["ours"], w["sequential"]
    share = ours["rate"] / WRITEBACK_LIMIT_PER_S
    print(f"4. Writeback of {w['n']:,} creates, Hector at {WRITEBACK_LATENCY_S * 1000:.0f} ms per call, limit {WRITEBACK_LIMIT_PER_S:.0f}/s")
    print(f"   ours {ours['rate']:6.1f} calls/s = {share:.0%} of the limit, {ours['share_429']:.2%} answered 429, "
          f"{ours['lost']} lost {goal('≥ 90%, < 1% 429, none lost', share >= 0.9 and ours['share_429'] < 0.01 and not ours['lost'])}")
    print(f"   sequential {seq['rate']:6.1f} calls/s   ours/sequential {ratio(ours['rate'], seq['rate'])}\n")
    return {"writeback_calls_per_s": ours["rate"], "writeback_limit_per_s": WRITEBACK_LIMIT_PER_S,
            "writeback_sequential_calls_per_s": seq["rate"], "writeback_429_share": ours["share_429"],
            "writeback_lost": ours["lost"]}


def report_dagster(bench: Bench) -> dict[str, Any]:
    d = figure_dagster_overhead(bench.n, bench.work)
    overhead = d["dagster_s"] - d["direct_s"]
    print(f"5. One category of {d['n']:,} CIs: hector-sync sync {d['dagster_s']:.1f} s vs the steps called "
          f"directly {d['direct_s']:.1f} s: Dagster adds {overhead:.1f} s {goal('< 5 s', overhead < 5)}\n")
    return {"dagster_overhead_s": overhead, "dagster_run_s": d["dagster_s"], "direct_run_s": d["direct_s"]}


def report_small(bench: Bench) -> dict[str, Any]:
    s = figure_small(bench.work, bench.small_counts)
    counts, demo = s["counts"], s["demo"]
    one, most = min(counts), max(counts)
    def slope(key: str) -> float:
        return (counts[most][key] - counts[one][key]) / (most - one)

    per_category, dagster_per_category = slope("resync_s"), slope("dagster_alone_s")
    print(f"7. Small categories: a no-change `hector-sync sync` of every category in one process, after a first "
          f"`sync --full`, {SMALL_CIS} CIs each; Dagster alone: the same runs with steps that do nothing "
          f"(benchmarks/empty_runs.py)")
    print(f"   {'categories':>10} {'first sync':>11} {'resync':>8} {'writes':>7} {'Dagster alone':>14}")
    for count, c in counts.items():
        print(f"   {count:>10} {c['first_s']:>9.1f} s {c['resync_s']:>6.1f} s {c['resync_writes']:>7} "
              f"{c['dagster_alone_s']:>12.1f} s")
    print(f"   each added category: (t{most} − t{one}) / {most - one} = {per_category:.2f} s, beside "
          f"{dagster_per_category:.2f} s for Dagster alone and {counts[one]['resync_s']:.1f} s for one category "
          f"{goal('< 1 s', per_category < 1)}")
    read = "full: today is its full_sync_weekday" if demo["full_read_day"] else "of the last 7 days"
    print(f"   the demo's configuration, {demo['synced']} syncing categories and {demo['parked']} parked "
          f"({demo['cis']:,} CIs synced): first sync {demo['first_s']:.1f} s, no-change resync ({read}) "
          f"{demo['resync_s']:.1f} s, {demo['resync_writes']} writes {goal('< 4 s', demo['resync_s'] < 4)}\n")
    return {"resync_seconds_per_category": per_category, "dagster_alone_seconds_per_category": dagster_per_category,
            "dagster_alone_s": {str(k): c["dagster_alone_s"] for k, c in counts.items()},
            "small_resync_s": {str(k): c["resync_s"] for k, c in counts.items()},
            "small_first_sync_s": {str(k): c["first_s"] for k, c in counts.items()},
            "small_resync_write_calls": {str(k): c["resync_writes"] for k, c in counts.items()},
            "noop_resync_3_categories_s": demo["resync_s"], "demo_first_sync_s": demo["first_s"],
            "demo_resync_write_calls": demo["resync_writes"]}


# In the order they print; --only picks some by name.
REPORTS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "reconcile": report_reconcile, "growth": report_growth, "ingest": report_ingest, "calls": report_calls,
    "writeback": report_writeback, "dagster": report_dagster, "small": report_small,
}


def figure_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REPORTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown figures {unknown}; the figures are {', '.join(REPORTS)}")
    return names


def category_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(count) for count in text.split(",")}))
    except ValueError:
        counts = ()
    if len(counts) < 2 or counts[0] < 1 or counts[-1] > MAX_COPIES:
        raise argparse.ArgumentTypeError(f"expected two or more numbers of categories from 1 to {MAX_COPIES}, "
                                         f"e.g. 1,5,20: {text!r}")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="CIs per figure (default 1,000,000)")
    parser.add_argument("--only", type=figure_names, default=list(REPORTS), metavar="NAME,...",
                        help=f"only these figures ({', '.join(REPORTS)}; default every one)")
    parser.add_argument("--no-5x", dest="five_x", action="store_false",
                        help=f"leave out growth's row of {GROWTH_FACTOR}× --size CIs (tried when it fits)")
    parser.add_argument("--categories", type=category_counts, default=SMALL_COUNTS, metavar="N,N,...",
                        help=f"figure 7's numbers of small categories (default {','.join(map(str, SMALL_COUNTS))})")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    n = args.size
    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)
    print(f"hector_sync benchmarks at {n:,} CIs on {platform.platform()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Python {platform.python_version()}\n")
    figures: dict[str, Any] = {"size": n}
    with tempfile.TemporaryDirectory(prefix="hector-sync-bench-") as tmp:
        bench = Bench(n, Path(tmp), args.five_x, args.categories)
        for name, report in REPORTS.items():
            if name in args.only:
                figures |= report(bench)
                sys.stdout.flush()

    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
