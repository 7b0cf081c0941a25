"""hector_sync's performance figures, each printed beside its reference, as ratios.

    python benchmarks/run.py                 # every figure at 1,000,000 CIs (make bench)
    python benchmarks/run.py --size 20000    # every figure at 20,000 CIs instead
    python benchmarks/run.py --json out.json # also write the figures as JSON

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import requests
import yaml

from hector_sync.c2 import C2Client
from hector_sync.config import Direction, SyncConfig, load_config
from hector_sync.demo import DEMO_CONFIG_PATH, DEMO_ENV
from hector_sync.reconcile import Reconciler
from hector_sync.simulators.sample_data import CATEGORIES_BY_NAME
from hector_sync.store import Store, create_schema, tune
from hector_sync.sync import CategorySync, open_clients
from hector_sync.writeback.hector import HectorWriteback

ATTRIBUTES = {("asset", "Serial number"): "text", ("asset", "Owner"): "text", ("asset", "Location"): "text"}
C2_TYPES = {f.name: f.type for f in CATEGORIES_BY_NAME["Printers"].fields}
MODELS = 40
WRITEBACK_LIMIT_PER_S = 50.0
WRITEBACK_LATENCY_S = 0.05


@dataclass
class Measured:
    result: Any
    seconds: float
    peak_rss_mb: float


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


def build_tables(path: str, n: int) -> dict[str, int]:
    """n CIs and n linked assets: 1% changed, 0.5% new CIs, 0.1% of the CIs gone."""
    con = tune(duckdb.connect(path))
    create_schema(con)
    con.execute(f"""
        INSERT INTO hector_subcategory (category_key, id, category_id, maker, model, description, price,
                                        attributes, version)
        SELECT 'printers', 1000 + m, 12, 'Maker ' || (m % 7), 'Model ' || m, 'Printer model ' || m,
               100.0 + m, MAP {{}}, 1
        FROM range({MODELS}) t(m)""")
    ci = """
        'ci-' || lpad(i::VARCHAR, 9, '0') AS ci_id, 'PRN-' || i AS name, 'Maker ' || ((i % {models}) % 7) AS maker,
        'Model ' || (i % {models}) AS model, 'Printer model ' || (i % {models}) AS description,
        'SN' || lpad(i::VARCHAR, 9, '0') AS serial, 'A-' || i AS tag,
        strftime(DATE '2020-01-01' + (i % 1500)::INTEGER, '%Y-%m-%d') AS bought,
        strftime(DATE '2025-01-01' + (i % 1500)::INTEGER, '%Y-%m-%d') AS ends,
        'user' || (i % 5000) || '@example.com' AS owner, 'Office ' || (i % 30) AS location,
        (100.0 + i % {models})::VARCHAR AS cost
    """.format(models=MODELS)
    con.execute(f"""
        INSERT INTO c2_ci
        SELECT 'printers', ci_id, name, 'active', TIMESTAMPTZ '2026-11-01 00:00:00+00', 1,
               MAP(['Manufacturer', 'Model', 'Description', 'SerialNumber', 'AssetTag', 'PurchaseDate',
                    'WarrantyEnd', 'Owner', 'Location', 'Cost'],
                   [maker, model, description, serial, tag, bought, ends, owner, location, cost])
        FROM (SELECT {ci} FROM range({n + n // 200}) t(i)) WHERE NOT (i % 1000 = 3 AND i < {n})""".replace(
        "FROM (SELECT", "FROM (SELECT i, ").replace(") WHERE NOT", ") c WHERE NOT"))
    con.execute(f"""
        INSERT INTO hector_asset (category_key, id, category_id, subcategory_id, stockroom_id, title, asset_tag,
                                  acquisition_date, end_of_life_date, status, attributes, c2_ref, external_refs, version)
        SELECT 'printers', 100000000 + i, 12, 1000 + i % {MODELS}, 1, name,
               CASE WHEN i % 100 = 7 THEN 'A-OLD-' || i ELSE tag END, bought, ends, 'in_stock',
               MAP(['Serial number', 'Owner', 'Location'], [serial, owner, location]), ci_id,
               '[{{"source": "c2", "id": "' || ci_id || '"}}]', 1
        FROM (SELECT i, {ci} FROM range({n}) t(i))""")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("c2_ci", "hector_asset")}
    con.close()
    return counts


def reconcile_once(path: str) -> dict[str, int]:
    rec = Reconciler.for_category(printers_category(), ATTRIBUTES, "Main warehouse", C2_TYPES)
    con = tune(duckdb.connect(path))  # the settings every Store connection has
    rec.derive(con)
    changes = rec.changes(con, Direction.C2_TO_HECTOR, full_read=True)
    con.close()
    per_item = changes.select("action", "item").unique()
    return dict(per_item.group_by("action").len().iter_rows())


def outer_join_floor(path: str) -> int:
    con = tune(duckdb.connect(path, read_only=True))
    rows = con.execute("SELECT count(*) FROM c2_ci c FULL OUTER JOIN hector_asset h ON h.c2_ref = c.ci_id").fetchone()
    con.close()
    return int(rows[0])


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
    fields = {"title": "Name", "asset_tag": "AssetTag", "acquisition_date": "PurchaseDate",
              "end_of_life_date": "WarrantyEnd", "Serial number": "SerialNumber", "Owner": "Owner",
              "Location": "Location"}
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


def figure_reconcile(n: int, work: Path) -> dict[str, Any]:
    path = str(work / f"reconcile-{n}.duckdb")
    measured(build_tables, path, n)
    ours = measured(reconcile_once, path)
    floor = measured(outer_join_floor, path)
    naive = measured(naive_reconcile, path)
    expected = {"update_asset": n // 100, "create_asset": n // 200, "missing": n // 1000}
    got = {k: ours.result.get(k, 0) for k in expected}
    assert all(abs(got[k] - v) <= max(2, v // 50) for k, v in expected.items()), (got, expected)
    return {"n": n, "ours": ours, "floor": floor, "naive": naive, "counts": got}


# --- simulators in their own process -----------------------------------------------------------


@contextmanager
def simulators(sizes: dict[str, int]) -> Iterator[tuple[str, str]]:
    args = [sys.executable, "-m", "hector_sync.simulators", "--c2-port", "0", "--hector-port", "0", "--size", "0"]
    args += [a for name, count in sizes.items() for a in ("--sizes", f"{name}={count}")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().rsplit(" ", 1)[-1].strip() for _ in range(2)]
        yield urls[0], urls[1]
    finally:
        proc.kill()  # SIGKILL: the only signal a child cannot have inherited as ignored
        proc.wait(timeout=30)


def config_for(c2_url: str, hector_url: str, work: Path, name: str, keys: dict[str, str],
               hector_extra: dict[str, Any] | None = None) -> Path:
    """The demo configuration pointed at these simulators; `keys` maps category key → C2/Hector name."""
    data = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))
    data["c2"]["url"], data["hector"]["url"] = c2_url, hector_url
    data["hector"].update(hector_extra or {})
    data["storage"]["duckdb_path"] = str(work / name / "hector_sync.duckdb")
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


def cli_sync(config_path: Path, key: str) -> float:
    started = time.perf_counter()
    hector_sync = Path(sys.executable).with_name("hector-sync")
    subprocess.run([str(hector_sync), "--config", str(config_path), "sync", "--full", "--category", key],
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


# --- report -----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="CIs per figure (default 1,000,000)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    n = args.size
    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)
    print(f"hector_sync benchmarks at {n:,} CIs on {platform.platform()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Python {platform.python_version()}\n")
    figures: dict[str, Any] = {"size": n}
    with tempfile.TemporaryDirectory(prefix="hector-sync-bench-") as tmp:
        work = Path(tmp)
        sizes = sorted({max(n // 100, 100), max(n // 10, 100), n})
        growth = {s: figure_reconcile(s, work) for s in sizes}
        r = growth[n]
        print("1. Reconciliation: the full change set of one category, snapshots in DuckDB")
        print(f"   {n:,} CIs vs {n:,} linked assets, 1% changed / 0.5% new / 0.1% gone -> {r['counts']}")
        print(f"   ours {r['ours'].seconds:8.2f} s  peak {r['ours'].peak_rss_mb:6.0f} MB")
        print(f"   floor (bare DuckDB full outer join) {r['floor'].seconds:6.2f} s   ours/floor {ratio(r['ours'].seconds, r['floor'].seconds)} (goal ≤ 3×)")
        print(f"   naive per-record Python {r['naive'].seconds:8.2f} s  peak {r['naive'].peak_rss_mb:6.0f} MB   "
              f"naive/ours {ratio(r['naive'].seconds, r['ours'].seconds)}\n")
        print("6. Growth of the reconciliation")
        print(f"   {'CIs':>10} {'seconds':>9} {'peak MB':>8} {'µs per CI':>10}")
        for s, g in growth.items():
            print(f"   {s:>10,} {g['ours'].seconds:>9.2f} {g['ours'].peak_rss_mb:>8.0f} {g['ours'].seconds / s * 1e6:>10.1f}")
        print()
        figures |= {"reconcile_s": r["ours"].seconds, "reconcile_floor_s": r["floor"].seconds,
                    "reconcile_peak_rss_mb": r["ours"].peak_rss_mb, "naive_reconcile_s": r["naive"].seconds,
                    "growth": {str(s): {"seconds": g["ours"].seconds, "peak_rss_mb": g["ours"].peak_rss_mb}
                               for s, g in growth.items()}}

        i = figure_ingest(n, work)
        print("2. Snapshot ingestion from the C2 simulator into DuckDB")
        print(f"   ours  {i['ours'].seconds:8.2f} s  {n / i['ours'].seconds:9,.0f} CIs/s  peak {i['ours'].peak_rss_mb:6.0f} MB")
        print(f"   floor (download and decode only) {i['floor'].seconds:6.2f} s   ours/floor {ratio(i['ours'].seconds, i['floor'].seconds)} (goal ≤ 1.3×)")
        print(f"   memory: {i['small_n']:,} CIs peak {i['small'].peak_rss_mb:.0f} MB vs {n:,} CIs peak {i['ours'].peak_rss_mb:.0f} MB\n")
        figures |= {"ingest_s": i["ours"].seconds, "ingest_floor_s": i["floor"].seconds,
                    "ingest_peak_rss_mb": i["ours"].peak_rss_mb, "ingest_small_peak_rss_mb": i["small"].peak_rss_mb}

        a = figure_api_calls(n, work)
        print(f"3. API calls of whole syncs of {a['n']:,} CIs (reads, writes) per system")
        for label in ("first", "noop", "one_percent"):
            print(f"   {label:<12} C2 ITSM {a[label]['c2']}  Hector {a[label]['hector']}")
        noop_reads = a["noop"]["c2"][0] + a["noop"]["hector"][0]
        noop_writes = a["noop"]["c2"][1] + a["noop"]["hector"][1]
        print(f"   no-change resync: {noop_reads} reads, {noop_writes} writes; naive peer (GET + PATCH per CI): "
              f"{a['naive_noop']:,} calls, naive/ours {ratio(a['naive_noop'], noop_reads + noop_writes)}\n")
        figures |= {"noop_resync_write_calls": noop_writes, "noop_resync_read_calls": noop_reads,
                    "naive_noop_resync_calls": a["naive_noop"], "api_calls": a}

        w = figure_writeback(n, work)
        ours, seq = w["ours"], w["sequential"]
        print(f"4. Writeback of {w['n']:,} creates, Hector at {WRITEBACK_LATENCY_S * 1000:.0f} ms per call, limit {WRITEBACK_LIMIT_PER_S:.0f}/s")
        print(f"   ours {ours['rate']:6.1f} calls/s = {ours['rate'] / WRITEBACK_LIMIT_PER_S:.0%} of the limit (goal ≥ 90%), "
              f"{ours['share_429']:.2%} answered 429, {ours['lost']} lost")
        print(f"   sequential {seq['rate']:6.1f} calls/s   ours/sequential {ratio(ours['rate'], seq['rate'])}\n")
        figures |= {"writeback_calls_per_s": ours["rate"], "writeback_limit_per_s": WRITEBACK_LIMIT_PER_S,
                    "writeback_sequential_calls_per_s": seq["rate"], "writeback_429_share": ours["share_429"],
                    "writeback_lost": ours["lost"]}

        d = figure_dagster_overhead(n, work)
        overhead = d["dagster_s"] - d["direct_s"]
        print(f"5. One category of {d['n']:,} CIs: hector-sync sync {d['dagster_s']:.1f} s vs the steps called "
              f"directly {d['direct_s']:.1f} s: Dagster adds {overhead:.1f} s (goal < 5 s)")
        figures |= {"dagster_overhead_s": overhead, "dagster_run_s": d["dagster_s"], "direct_run_s": d["direct_s"]}

    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
