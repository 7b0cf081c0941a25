"""hector-sync: the operator's command line (spec: sync-config.md, "Command line").

Exit status: 0 all went well; 1 a category failed (the others still ran); 2 the configuration
or the command line is wrong.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from hector_sync.config import ConfigError, Direction, SyncConfig, load_config
from hector_sync.errors import ApiError

if TYPE_CHECKING:
    from hector_sync.sync import CategorySync

EXAMPLES = """examples:
  hector-sync demo --ui                      simulators + full sync + Dagster UI on :3000
  hector-sync discover --write-config my.yaml
  hector-sync --config my.yaml validate
  hector-sync --config my.yaml plan --category printers
  hector-sync --config my.yaml sync --full
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hector-sync",
        description="Keeps IT inventory in step between C2 ITSM and Hector, through Dagster.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="configuration file (default: $HECTOR_SYNC_CONFIG, else the demo)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="start the simulators, sync every demo category, print the summary",
                               epilog="example: hector-sync demo --ui")
    demo.add_argument("--ui", action="store_true", help="then serve the Dagster UI on the same instance until Ctrl-C")
    demo.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")

    commands.add_parser("discover", help="list CMDBs, categories and fields in C2; categories, attributes, stockrooms in Hector",
                        epilog="example: hector-sync discover --write-config starter.yaml").add_argument(
        "--write-config", metavar="FILE", help="write a starter configuration, every category direction: none")
    commands.add_parser("validate", help="check the configuration offline and against both systems",
                        epilog="example: hector-sync --config my.yaml validate")
    for name, text in (("plan", "compute and print the change set; writes nothing to either system"),
                       ("sync", "run the sync through Dagster and print what changed per category")):
        sub = commands.add_parser(name, help=text, epilog=f"example: hector-sync {name} --category printers --full")
        sub.add_argument("--category", action="append", metavar="KEY", help="only this category (repeatable)")
        sub.add_argument("--full", action="store_true", help="read everything, not only the last 7 days' changes")
        if name == "sync":
            sub.add_argument("--allow-large-change", action="store_true",
                             help="let a change set through that the guard would hold back")
    commands.add_parser("simulate", help="serve the two simulators alone on loopback, for trying things by hand",
                        epilog="example: hector-sync simulate")
    return parser


def _keys(config: SyncConfig, chosen: list[str] | None) -> list[str]:
    return [config.category(k).key for k in chosen] if chosen else [c.key for c in config.categories]


def _plan(config: SyncConfig, keys: list[str], full: bool) -> int:
    from hector_sync.store import CategoryBusy, Store
    from hector_sync.sync import FLOWS, CategorySync, MappingInvalid

    store = Store(config.storage.duckdb_path)
    status = 0
    with pl.Config(tbl_rows=40, tbl_width_chars=160, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        for key in keys:
            sync = CategorySync(config, config.category(key), store, log=lambda _: None)
            if not sync.flows():
                print(f"{key}: direction {sync.category.direction.value}: nothing to plan\n")
                continue
            try:
                mode = "full" if full else "auto"
                with store.category_lock(key, "hector-sync plan"):
                    sync.snapshot_c2(mode)
                    sync.snapshot_hector(mode)
                    for direction in FLOWS[sync.category.direction]:
                        sync.derive(direction)
                        _print_plan(sync, direction, sync.plan(direction))
            except (ApiError, MappingInvalid, CategoryBusy) as failed:
                print(f"{key}: FAILED: {failed}\n")
                status = 1
    return status


def _print_plan(sync: CategorySync, direction: Direction, changes: pl.DataFrame) -> None:
    """One direction's change set: counts, drift, what the guard would hold back, the rows."""
    summary = sync.summary(direction, changes)
    counts = ", ".join(f"{n} {a}" for a, n in summary.counts.items() if n)
    print(f"{sync.key} ({direction.value}): {counts or 'nothing'}")
    drift = changes.filter(pl.col("action") == "revert_drift")
    for item, reason in drift.select("item", "reason").iter_rows():
        print(f"  drift on {item}: {reason}")
    refusal = sync.guard_refusal(direction, summary)
    if refusal:
        print(f"  the guard would hold this back: {refusal} (--allow-large-change lets it through)")
    shown = changes.filter(pl.col("action") != "unchanged")
    if shown.height:
        print(shown.select("action", "item", "target_id", "field", "old", "new", "reason"))
    print()


def _sync(config: SyncConfig, path: str | None, keys: list[str], full: bool, allow: bool) -> int:
    from hector_sync.runner import SUMMARY_COLUMNS, run_sync

    results = run_sync(config, path, keys, full=full, allow_large_change=allow)
    print(f"{'category':<12} {'direction':<13} {'status':<8} " + " ".join(f"{c:>9}" for c in SUMMARY_COLUMNS))
    for r in results:
        status = "parked" if not r.run_id else "ok" if r.success else "FAILED"
        print(f"{r.key:<12} {r.direction:<13} {status:<8} " + " ".join(f"{r.counts[c]:>9}" for c in SUMMARY_COLUMNS))
    for r in results:
        if r.error:
            print(f"\n{r.key} failed (run {r.run_id}): {r.error}")
    return 0 if all(r.success for r in results) else 1


def _demo(ui: bool, port: int) -> int:
    from hector_sync.demo import DEMO_C2_PORT, DEMO_HECTOR_PORT
    from hector_sync.runner import dagster_home
    from hector_sync.simulators.serve import start_simulators

    os.environ.pop("HECTOR_SYNC_CONFIG", None)
    config = load_config(None)
    with start_simulators(c2_port=DEMO_C2_PORT, hector_port=DEMO_HECTOR_PORT) as sims:
        print(f"C2 ITSM simulator: {sims.c2_url}\nHector simulator:  {sims.hector_url}\n")
        status = _sync(config, None, _keys(config, None), full=True, allow=False)
        if ui:
            home = dagster_home(config)
            print(f"\nDagster UI on http://127.0.0.1:{port} (instance {home}); Ctrl-C to stop.", flush=True)
            command = [sys.executable, "-m", "dagster", "dev", "-m", "hector_sync.definitions",
                       "-h", "127.0.0.1", "-p", str(port)]
            try:
                subprocess.run(command, check=False)
            except KeyboardInterrupt:
                pass
    return status


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            sys.exit(_demo(args.ui, args.port))
        if args.command == "simulate":
            from hector_sync.simulators.serve import serve_forever

            serve_forever()
            return
        config = load_config(args.config)
        if args.command == "discover":
            from hector_sync.discovery import discover

            sys.exit(discover(config, args.write_config))
        if args.command == "validate":
            from hector_sync.discovery import validate

            sys.exit(validate(config))
        keys = _keys(config, args.category)
        if args.command == "plan":
            sys.exit(_plan(config, keys, args.full))
        sys.exit(_sync(config, args.config, keys, args.full, args.allow_large_change))
    except ConfigError as wrong:
        print(f"hector-sync: {wrong}", file=sys.stderr)
        sys.exit(2)
