"""hector-sync: the operator's command line (docs/configuration.md, "Commands").

Exit status: 0 all went well; 1 a category failed (the others still ran), or a link or unlink
was refused (nothing written); 2 the configuration or the command line is wrong, a port it names
busy included.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from hector_sync.config import CONFIG_ENV_VAR, ConfigError, SyncConfig, load_config, load_for_discover
from hector_sync.ports import C2_SIMULATOR, DAGSTER_UI, HECTOR_SIMULATOR, LOOPBACK, PortChooser, PortUnavailable
from hector_sync.progress import INTERVAL_ENV, INTERVAL_S
from hector_sync.textsafe import UNPRINTABLE, text

if TYPE_CHECKING:
    from hector_sync.plans import Plan
    from hector_sync.runner import CategoryResult

CONFIG_HELP = "configuration file (default: $HECTOR_SYNC_CONFIG, else the embedded demo configuration)"
DESCRIPTION = f"""Keeps IT inventory in step between C2 ITSM and Hector, through Dagster.

Each configured category is one Dagster partition: a snapshot of both systems, the change set,
then the writeback toward the category's direction. Long reads and writebacks log their
progress (pages and items done, rate, time left) every {INTERVAL_S:g} s on stderr and in
the Dagster run log. `hector-sync COMMAND --help` tells more about each command."""
EXAMPLES = f"""examples:
  hector-sync demo --ui                       # sample data, a full sync, the Dagster UI (:3000 if free)
  hector-sync --config my.yaml discover --write-config starter.yaml      # a config to fill in
  hector-sync --config my.yaml validate       # do the mapped names exist in both systems?
  hector-sync --config my.yaml plan --category printers      # what a sync would change
  hector-sync --config my.yaml sync --full    # every category, reading everything
  hector-sync --config my.yaml sync --category printers --allow-large-change
  hector-sync --config my.yaml held           # what waits for a person to pick the right pair

exit status:
  0  all went well
  1  a category failed (the others still ran), a mapped name does not exist, a system
     cannot be used, or a link or unlink was refused
  2  the configuration or the command line is wrong (a port given to demo or simulate is busy)

environment:
  HECTOR_SYNC_CONFIG            the configuration file when --config is not given
  DAGSTER_HOME                  the Dagster instance that keeps the runs (default: a dagster/
                                folder beside the DuckDB file)
  {INTERVAL_ENV}  seconds between two progress lines (default {INTERVAL_S:g})
"""

# Per command: (one-line help, what it does, examples). Example lines: "command   # what for".
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "start the simulators, sync every demo category, print the summary",
        """\
Starts the bundled C2 ITSM and Hector simulators with sample data on loopback, runs a full
sync of every demo category through Dagster and prints the summary. With --ui it then serves
the Dagster UI on the same instance until Ctrl-C. It listens on ports 8701, 8702 and 3000,
or on free ones where those are busy (another demo, a Dagster UI), and prints the URLs; a
port given as an option must be free. The configuration it runs, the embedded one with its
simulators' URLs, is written to .hector-sync/demo.yaml: other commands reach the demo's
simulators with --config .hector-sync/demo.yaml.""",
        """\
  hector-sync demo                 # sync the sample data once and print the summary
  hector-sync demo --ui            # the same, then browse the runs at the URL it prints
  hector-sync demo --ui --port 3001 --c2-port 8711 --hector-port 8712
  hector-sync demo --ui --port 0   # any free port for the UI""",
    ),
    "discover": (
        "list CMDBs, categories and fields in C2; categories, attributes, stockrooms in Hector",
        """\
Reads both systems named in the configuration (their url and credentials only: a file with
just the c2 and hector sections will do) and prints what a mapping can name: CMDBs,
categories and fields in C2 ITSM; categories, attributes and stockrooms in Hector.
--write-config FILE also writes a starter configuration with every category at direction:
none, to fill in (an existing FILE is never overwritten).""",
        """\
  hector-sync --config my.yaml discover
  hector-sync --config my.yaml discover --write-config starter.yaml
  hector-sync discover --write-config starter.yaml   # against `hector-sync simulate`""",
    ),
    "validate": (
        "check the configuration offline and against both systems",
        """\
Checks the configuration file, that its secrets' environment variables are set, and that
every name it maps (CMDBs, categories, fields, attributes, stockroom) exists in C2 ITSM and
Hector. Categories at direction: none are not checked. Exit status 1: a name does not exist
or a system cannot be used; 2: the file is wrong or a secret is unset.""",
        """\
  hector-sync --config my.yaml validate
  HECTOR_SYNC_CONFIG=my.yaml hector-sync validate""",
    ),
    "plan": (
        "compute and print the change set; writes nothing to either system",
        """\
Runs each category's Dagster job up to its change sets and their blocking checks (never the
writebacks), then prints per category and direction what a sync would create, update, move
and retire, the drift it would put back, and whether the guard holds it back. Writes nothing
to C2 ITSM or Hector (only the local DuckDB snapshots). The plan goes to stdout, the progress
of the reads to stderr; a failed check or read exits 1, without a failure e-mail.""",
        """\
  hector-sync --config my.yaml plan
  hector-sync --config my.yaml plan --category printers --full
  hector-sync --config my.yaml plan --category printers --category laptops > plan.txt""",
    ),
    "sync": (
        "run the sync through Dagster and print what changed per category",
        """\
Runs each category through Dagster in process (the same assets the schedule
materializes), one run per category in its DAGSTER_HOME, and prints per category what was
created, updated, moved, retired, unchanged, skipped and failed. Progress of the reads and
writebacks shows on stderr and in the run log; a failed category is e-mailed to
notify_on_error and the others still run (exit status 1).""",
        """\
  hector-sync --config my.yaml sync
  hector-sync --config my.yaml sync --category printers --full
  hector-sync --config my.yaml sync --category printers --allow-large-change   # after checking the plan""",
    ),
    "apply": (
        "apply exactly the plan that `plan` printed, through Dagster",
        """\
Materializes the writeback of the plan's category and direction through Dagster, sending
only the rows of that plan not yet done. Refuses a plan older than max_plan_age, or one
computed before the latest read of either system, unless --allow-stale-plan; an item
changed in its system since the plan is a conflict, never overwritten.""",
        """\
  hector-sync --config my.yaml plan --category printers      # prints "plan printers.hector.2026…"
  hector-sync --config my.yaml apply printers.hector.20261203T071205Z.3f9a
  hector-sync --config my.yaml apply PLAN_ID --allow-stale-plan   # after checking it again""",
    ),
    "undo": (
        "show, then with --yes apply, the inverse of what a run applied",
        """\
Reads both systems afresh and builds the inverse plan of what run RUN_ID applied: old values
go back, moves go back, retired items are reactivated and created items are retired (never
deleted). An item someone changed after that run is left alone and reported as a conflict.
Without --yes it only shows the plan; with --yes it applies it through Dagster, under the
guard and If-Match, recorded in the history as the undo of that run.""",
        """\
  hector-sync --config my.yaml undo 1891cea1-ad4d-401b-81a4-b3a67a2fa487
  hector-sync --config my.yaml undo 1891cea1-ad4d-401b-81a4-b3a67a2fa487 --category printers --yes""",
    ),
    "history": (
        "every recorded change of one CI or asset: when, run, plan, field, old → new, outcome",
        """\
Prints, oldest first, each change the sync applied or refused for one item, named by its
C2 ITSM CI id, its Hector asset id or its asset tag: when, which run and plan, the action,
the field with old → new, the outcome and the reason.""",
        """\
  hector-sync --config my.yaml history ci-10000042
  hector-sync --config my.yaml history 1234           # a Hector asset id
  hector-sync --config my.yaml history PRN-0042       # an asset tag""",
    ),
    "held": (
        "list what the sync holds back for a person to settle, with the candidates",
        """\
Lists, per category, what the sync will not decide alone: an identify_by value that matches
several unlinked items (each item involved is skipped), and a C2 ITSM create whose outcome is
unknown while C2 ITSM may list more than one CI that could be it. Each comes with the reason
and its candidates (system, id, name, key value), read from the latest snapshots: it calls
neither system. Settle one with `hector-sync link`.""",
        """\
  hector-sync --config my.yaml held
  hector-sync --config my.yaml held --category laptops""",
    ),
    "link": (
        "pin a CI and an asset as one item; the next sync links them",
        """\
Pins CI_ID and ASSET_ID of the category as one item, once both are in its latest snapshots and
neither is linked to something else. The next sync links them like any pair: the asset gets
the CI's external ref and the fields sync as usual, under the guard and If-Match. A pinned
held create is never created again. Recorded in the history with the OS user; plans computed
before it are stale.""",
        """\
  hector-sync --config my.yaml held --category laptops      # the candidates
  hector-sync --config my.yaml link --category laptops ci-20000024 9004""",
    ),
    "unlink": (
        "take back a pin or a linked pair; they are then matched as new items",
        """\
Takes CI_ID and ASSET_ID of the category apart. A pin no sync wrote yet is dropped, and the
next sync matches both as new items. A pair the asset's external ref records in Hector is taken
apart by the next sync, which removes the ref (under If-Match) and leaves both alone otherwise;
from the sync after, both are matched as new items. Recorded in the history with the OS user.""",
        """\
  hector-sync --config my.yaml unlink --category laptops ci-20000024 9004""",
    ),
    "simulate": (
        "serve the two simulators alone on loopback, for trying things by hand",
        """\
Serves the bundled C2 ITSM (http://127.0.0.1:8701) and Hector (http://127.0.0.1:8702)
simulators with sample data until Ctrl-C, and prints their URLs and demo logins. The embedded
demo configuration points at these ports, so the other commands work against them without
--config; a busy port stops it (exit status 2). On other ports (--c2-port, --hector-port; 0 for
any free port), give the other commands a file with their URLs: the c2 and hector sections of
the demo configuration are enough for discover.""",
        """\
  hector-sync simulate             # then, in another terminal:
  hector-sync plan --category printers
  hector-sync simulate --c2-port 8711 --hector-port 8712""",
    ),
}
COMMAND_OPTIONS = {
    "--category": "only this category, by its key (repeatable; default: every category)",
    "--full": ("read everything; without it only what changed in the last 7 days, except on "
               "full_sync_weekday or when there is no earlier snapshot"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hector-sync",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs = {
        name: commands.add_parser(
            name, help=short, description=long, epilog=f"examples:\n{examples}\n",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for name, (short, long, examples) in COMMANDS.items()
    }
    for name in ("discover", "validate", "plan", "sync", "apply", "undo", "history", "held", "link", "unlink"):
        # also accepted after the command
        subs[name].add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)
    subs["demo"].add_argument("--ui", action="store_true", help="then serve the Dagster UI on the same instance until Ctrl-C")
    subs["demo"].add_argument("--port", type=_port, metavar="PORT",
                              help="port of the Dagster UI (default 3000, or a free one when 3000 is busy)")
    for name, fallback in (("demo", ", or a free one when it is busy"), ("simulate", "")):
        for listener in (C2_SIMULATOR, HECTOR_SIMULATOR):
            subs[name].add_argument(listener.option, type=_port, metavar="PORT",
                                    help=f"port of the {listener.name} (default {listener.default}{fallback})")
    subs["discover"].add_argument(
        "--write-config", metavar="FILE", help="write a starter configuration there, every category direction: none")
    for name in ("plan", "sync"):
        subs[name].add_argument("--category", action="append", metavar="KEY", help=COMMAND_OPTIONS["--category"])
        subs[name].add_argument("--full", action="store_true", help=COMMAND_OPTIONS["--full"])
    for name in ("sync", "apply", "undo"):
        subs[name].add_argument("--allow-large-change", action="store_true",
                                help="write even a change set that the guard holds back as a likely wipe: an "
                                     "empty source, or more than max_change_fraction of the linked items "
                                     "retired or moved")
    subs["apply"].add_argument("plan_id", metavar="PLAN_ID", help="the id `hector-sync plan` printed")
    subs["apply"].add_argument("--allow-stale-plan", action="store_true",
                               help="apply it even if it is older than max_plan_age or either system was read since")
    subs["undo"].add_argument("run_id", metavar="RUN_ID", help="the Dagster run whose writes to undo")
    subs["undo"].add_argument("--category", action="append", metavar="KEY",
                              help="only this category of the run (repeatable; default: every category it wrote)")
    subs["undo"].add_argument("--yes", action="store_true", help="apply the inverse plan (without it: only show it)")
    subs["history"].add_argument("item", metavar="ITEM", help="a C2 ITSM CI id, a Hector asset id or an asset tag")
    subs["held"].add_argument("--category", action="append", metavar="KEY",
                              help="only this category (repeatable; default: every category that syncs)")
    for name in ("link", "unlink"):
        subs[name].add_argument("--category", required=True, metavar="KEY", help="the category of the pair")
        subs[name].add_argument("ci_id", metavar="CI_ID", help="the C2 ITSM CI id")
        subs[name].add_argument("asset_id", metavar="ASSET_ID", type=int, help="the Hector asset id")
    return parser


def _port(text: str) -> int:
    """A TCP port from the command line; 0 asks for any free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port: give 1 to 65535, or 0 for any free port")
    return int(text)


def _keys(config: SyncConfig, chosen: list[str] | None) -> list[str]:
    return [config.category(k).key for k in chosen] if chosen else [c.key for c in config.categories]


def _plan(config: SyncConfig, path: str | None, keys: list[str], full: bool) -> int:
    """Each category's job up to its change sets, through Dagster like a sync; then its plans."""
    from hector_sync.runner import run_sync

    parked = [k for k in keys if not config.category(k).direction.flows]
    for key in parked:
        print(f"{key}: direction {config.category(key).direction.value}: nothing to plan\n")
    flowing = [k for k in keys if k not in parked]
    if not flowing:
        return 0
    results = run_sync(config, path, flowing, full=full, plan_only=True)
    _print_plans(config, results)
    return _print_failures(results)


def _undo(config: SyncConfig, path: str | None, run_id: str, chosen: list[str] | None, *, apply: bool,
          allow_large: bool) -> int:
    """Show the inverse plan of what run `run_id` applied, per category it wrote; apply it with --yes."""
    from hector_sync.plans import PlanBook
    from hector_sync.runner import run_undo
    from hector_sync.store import Store

    if not config.storage.duckdb_path.exists():
        print(f"hector-sync: {config.storage.duckdb_path} does not exist: no run has synced with this configuration",
              file=sys.stderr)
        return 1
    touched = PlanBook(Store(config.storage.duckdb_path)).applied_by(run_id)
    keys = [config.category(k).key for k in chosen] if chosen else sorted(touched)
    missing = [k for k in keys if k not in touched]
    if not touched or missing:
        where = f" in category {', '.join(missing)}" if touched else ""
        print(f"hector-sync: run {run_id} applied nothing{where} that the history of "
              f"{config.storage.duckdb_path} records; nothing to undo", file=sys.stderr)
        return 1
    results = run_undo(config, path, run_id, keys, apply=apply, allow_large_change=allow_large)
    _print_plans(config, results)
    if apply:
        return _print_results(results)
    if any(r.plan_id for r in results):
        print("Nothing was written. Run the same command with --yes to apply these plans.")
    return _print_failures(results)


def _print_plans(config: SyncConfig, results: list[CategoryResult]) -> None:
    """The plan each run computed, read back from the sync's file as the run left it."""
    from hector_sync.plans import PlanBook
    from hector_sync.store import Store

    book = PlanBook(Store(config.storage.duckdb_path))
    with pl.Config(tbl_rows=40, tbl_width_chars=160, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        for result in results:
            if result.plan_id:
                plan = book.get(result.plan_id)
                _print_plan(plan, book.rows(plan))


def _print_failures(results: list[CategoryResult]) -> int:
    """Each failed run of a command that writes nothing, with its reason; the exit status."""
    for result in results:
        if result.error:
            print(f"{result.key}: FAILED (run {result.run_id}): {text(result.error)}\n")
    return 0 if all(r.success for r in results) else 1


def _print_plan(plan: Plan, changes: pl.DataFrame) -> None:
    """One direction's change set: its plan id, counts, drift, what the guard holds back, the rows."""
    from hector_sync.reconcile.changes import ACTIONS, item_counts

    counts = ", ".join(f"{n} {a}" for a, n in item_counts(changes, plan.direction, plan.unchanged or 0).items() if n)
    print(f"{plan.category_key} ({plan.direction.value}): {counts or 'nothing'}")
    print(f"  plan {plan.plan_id}" + (f", the undo of run {plan.undo_of}" if plan.undo_of else "")
          + f" (from {plan.describe_reads()})")
    order = {a: i for i, a in enumerate(ACTIONS[plan.direction])}
    changes = changes.sort(pl.col("action").replace_strict(order, default=len(order)), "item", "field")
    drift = changes.filter(pl.col("action") == "revert_drift")
    for item, reason in drift.select("item", "reason").iter_rows():
        print(f"  drift on {text(item)}: {text(reason)}")
    if plan.guard_refusal:
        print(f"  the guard holds this back: {plan.guard_refusal} (--allow-large-change lets it through)")
    shown = changes.filter(pl.col("action") != "unchanged")  # a plan of an older version listed them
    if shown.height:
        print(_escaped(shown.select("action", "item", "target_id", "field", "old", "new", "reason")))
    print()


def _escaped(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its text through `textsafe.text`: a value cannot clear the operator's screen
    or forge a line of the plan. Only a column holding such a character makes the Python round trip."""
    risky = [name for name, kind in frame.schema.items()
             if kind == pl.Utf8 and frame[name].str.contains(UNPRINTABLE).any()]
    return frame.with_columns(pl.col(name).map_elements(text, return_dtype=pl.Utf8) for name in risky)


def _sync(config: SyncConfig, path: str | None, keys: list[str], full: bool, allow: bool) -> int:
    from hector_sync.runner import run_sync

    return _print_results(run_sync(config, path, keys, full=full, allow_large_change=allow))


def _print_results(results: list[CategoryResult]) -> int:
    """The summary table of `sync` and `apply`, then each failure; the exit status."""
    from hector_sync.state import SUMMARY_COLUMNS

    print(f"{'category':<12} {'direction':<13} {'status':<8} " + " ".join(f"{c:>9}" for c in SUMMARY_COLUMNS))
    for r in results:
        status = "parked" if not r.run_id else "ok" if r.success else "FAILED"
        print(f"{r.key:<12} {r.direction:<13} {status:<8} " + " ".join(f"{r.counts[c]:>9}" for c in SUMMARY_COLUMNS))
    for r in results:
        if r.error:
            print(f"\n{r.key} failed (run {r.run_id}): {r.error}")
    return 0 if all(r.success for r in results) else 1


def _apply(config: SyncConfig, path: str | None, plan_id: str, allow_stale: bool, allow_large: bool) -> int:
    from hector_sync.plans import PlanBook, UnknownPlan
    from hector_sync.runner import run_plan
    from hector_sync.store import Store

    book = PlanBook(Store(config.storage.duckdb_path))
    try:
        plan = book.get(plan_id)
    except UnknownPlan as unknown:
        print(f"hector-sync: {unknown}", file=sys.stderr)
        return 1
    print(f"applying plan {plan.plan_id}: category {plan.category_key}, {plan.direction.value} (from {plan.describe_reads()})")
    status = _print_results([run_plan(config, path, plan, allow_stale_plan=allow_stale, allow_large_change=allow_large)])
    plan = book.get(plan_id)  # as the run left it
    states = ", ".join(f"{n} {state}" for state, n in sorted(book.state_counts(plan).items()))
    finished = f"; finished by run {plan.finished_by} at {plan.finished_at:%Y-%m-%d %H:%M:%S} UTC" if plan.finished_at else ""
    print(f"\nplan {plan.plan_id}: items {states}{finished}")
    return status


def _demo(ui_port: int | None, c2_port: int | None, hector_port: int | None, *, ui: bool) -> int:
    """The simulators, a full sync of the demo categories and, with `ui`, the Dagster UI.

    Every port is settled before anything starts. The configuration it runs is the embedded one
    with the URLs of the simulators it started (`write_demo_copy`): named in HECTOR_SYNC_CONFIG,
    the `dagster dev` it starts runs against them too.
    """
    from hector_sync.demo import write_demo_copy
    from hector_sync.instance import dagster_home
    from hector_sync.simulators.serve import start_simulators

    chooser = PortChooser(fallback=True)
    ui_at = chooser.choose(DAGSTER_UI, ui_port) if ui else None
    c2_at, hector_at = chooser.choose(C2_SIMULATOR, c2_port), chooser.choose(HECTOR_SIMULATOR, hector_port)
    for note in chooser.notes:
        print(note)
    with start_simulators(c2_port=c2_at, hector_port=hector_at) as sims:
        path = write_demo_copy(sims.c2_url, sims.hector_url)
        os.environ[CONFIG_ENV_VAR] = str(path)
        config = load_config(path)
        print(f"C2 ITSM simulator: {sims.c2_url}\nHector simulator:  {sims.hector_url}\n")
        status = _sync(config, str(path), _keys(config, None), full=True, allow=False)
        if ui_at is not None:
            home = dagster_home(config)
            shown = path.relative_to(Path.cwd())
            print(f"\nDagster UI on http://{LOOPBACK}:{ui_at} (instance {home}); Ctrl-C to stop.\n"
                  f"Other commands reach this demo with: hector-sync --config {shown} COMMAND", flush=True)
            command = [sys.executable, "-m", "dagster", "dev", "-m", "hector_sync.definitions",
                       "-h", LOOPBACK, "-p", str(ui_at)]
            try:
                subprocess.run(command, check=False)
            except KeyboardInterrupt:
                pass
    return status


def _simulate(c2_port: int | None, hector_port: int | None) -> None:
    """Both simulators until Ctrl-C, on the ports the embedded configuration names unless given."""
    from hector_sync.simulators.serve import serve_forever

    chooser = PortChooser(fallback=False)
    serve_forever(c2_port=chooser.choose(C2_SIMULATOR, c2_port),
                  hector_port=chooser.choose(HECTOR_SIMULATOR, hector_port))


RUNS_DAGSTER = frozenset({"sync", "plan", "apply", "undo", "demo"})  # the commands that start Dagster runs


def _no_collection_at_exit() -> None:
    """Python's shutdown frees the modules one by one, and each pass of the cyclic garbage
    collector over Dagster's heap makes that take 0.3-0.5 s after any command. Every object
    is still freed and every exit handler still runs; cycles are left to the OS, as is the
    memory of the whole process a moment later."""
    gc.disable()
    gc.freeze()


@contextmanager
def _start_up() -> Iterator[None]:
    """Start-up without the cyclic garbage collector, and what it made frozen after.

    Importing Dagster and its storage, and our definitions, makes hundreds of thousands of
    objects that live as long as the process, and no cyclic garbage. The collector's passes over
    them cost 0.25 s of a start, and each later full pass scans them again: 0.4 s of a
    three-category sync in all, 0.05 s once they are frozen (`gc.freeze`: never scanned again).
    Garbage made after start-up is collected as usual."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> None:
    atexit.register(_no_collection_at_exit)
    with _start_up():
        args = _parser().parse_args(argv)
        if args.command in RUNS_DAGSTER:
            importlib.import_module("hector_sync.runner")  # Dagster, its storage and our definitions
    try:
        if args.command == "demo":
            sys.exit(_demo(args.port, args.c2_port, args.hector_port, ui=args.ui))
        if args.command == "simulate":
            _simulate(args.c2_port, args.hector_port)
            return
        if args.command == "discover":
            from hector_sync.discovery import discover

            sys.exit(discover(load_for_discover(args.config), args.write_config))
        config = load_config(args.config)
        if args.command == "validate":
            from hector_sync.validation import validate

            sys.exit(validate(config))
        if args.command == "apply":
            sys.exit(_apply(config, args.config, args.plan_id, args.allow_stale_plan, args.allow_large_change))
        if args.command == "history":
            from hector_sync.history import print_history

            sys.exit(print_history(config, args.item))
        if args.command == "held":
            from hector_sync.held import print_held

            flowing = [c.key for c in config.categories if c.direction.flows]
            sys.exit(print_held(config, _keys(config, args.category) if args.category else flowing))
        if args.command in ("link", "unlink"):
            from hector_sync.held import change_pin

            sys.exit(change_pin(config, args.category, args.ci_id.strip(), args.asset_id,
                                link=args.command == "link"))
        if args.command == "undo":
            sys.exit(_undo(config, args.config, args.run_id, args.category, apply=args.yes,
                           allow_large=args.allow_large_change))
        keys = _keys(config, args.category)
        if args.command == "plan":
            sys.exit(_plan(config, args.config, keys, args.full))
        sys.exit(_sync(config, args.config, keys, args.full, args.allow_large_change))
    except (ConfigError, PortUnavailable) as wrong:
        print(f"hector-sync: {wrong}", file=sys.stderr)
        sys.exit(2)
