"""`hector-sync validate` (docs/configuration.md, "Commands").

The configuration speaks in names that only the live systems know. `validate` proves, before the
nightly run does, that every name the file uses still exists in both systems and that both let us
in; `hector-sync discover` (`hector_sync.discovery`) shows those names and writes a starter file.
"""

from __future__ import annotations

from collections.abc import Sequence

from hector_sync.c2 import C2Client, C2Cmdb
from hector_sync.catalog import Catalog
from hector_sync.config import ConfigError, Direction, Secret, SyncConfig
from hector_sync.errors import ApiError
from hector_sync.hector import HectorClient


def _unresolved_secrets(config: SyncConfig) -> list[str]:
    """One line per secret whose environment variable is unset (never a value)."""
    secrets: dict[str, Secret | None] = {
        "c2.password": config.c2.password,
        "hector.api_key": config.hector.api_key,
        "smtp.password": config.smtp.password,
    }
    problems = []
    for where, secret in secrets.items():
        if secret is None:
            continue
        try:
            secret.reveal()
        except ConfigError as unset:
            problems.append(f"{where}: {unset.message}")
    return problems


def _live_problems(config: SyncConfig, c2_cmdbs: Sequence[C2Cmdb], catalog: Catalog) -> dict[str, list[str | None]]:
    """Each problem with the places it concerns: category keys, None for the `cmdbs` list.

    A problem shared by several places (the default stockroom) is reported once for all.
    """
    problems: dict[str, list[str | None]] = {}
    found = ", ".join(c.name for c in c2_cmdbs) or "none"
    known = {c.name.strip() for c in c2_cmdbs}
    for name in config.cmdbs:
        if name.strip() not in known:
            problems.setdefault(f"C2 ITSM has no CMDB named '{name}' (found: {found})", []).append(None)
    for category in config.categories:
        if category.direction is not Direction.NONE:
            for problem in catalog.problems(category):
                problems.setdefault(problem, []).append(category.key)
    return problems


def _where(places: list[str | None]) -> str:
    """Where a problem is: "cmdbs", "category printers", "cmdbs and categories printers, laptops"."""
    keys = [key for key in places if key is not None]
    parts = ["cmdbs"] if None in places else []
    if keys:
        parts.append(f"{'category' if len(keys) == 1 else 'categories'} {', '.join(keys)}")
    return " and ".join(parts)


def _check_live(config: SyncConfig) -> tuple[dict[str, list[str | None]], list[ApiError]]:
    """The live problems, or the failures that kept a system from answering.

    Both systems are asked first, each on its own, so that one run reports both when neither
    lets us in.
    """
    c2 = C2Client.from_settings(config.c2)
    hector = HectorClient.from_settings(config.hector)
    with c2, hector:
        catalog = Catalog(config, c2, hector)
        c2_cmdbs: list[C2Cmdb] = []
        failures: list[ApiError] = []
        try:
            c2_cmdbs = c2.list_cmdbs()
        except ApiError as failed:
            failures.append(failed)
        try:
            catalog.hector_lists()
        except ApiError as failed:
            failures.append(failed)
        if failures:
            return {}, failures
        try:
            return _live_problems(config, c2_cmdbs, catalog), []
        except ApiError as failed:
            return {}, [failed]


def validate(config: SyncConfig) -> int:
    """Check the loaded configuration against its environment and both live systems.

    Categories with `direction: none` are parked, possibly half-written, so they are not checked
    (and are named as such). Exit status: 0 all well, 1 a name does not exist or a system cannot
    be used, 2 a secret's environment variable is unset.
    """
    print(f"{config.source}: the offline checks passed")
    unset = _unresolved_secrets(config)
    if unset:
        print("\n".join(unset))
        print(f"FAILED: {len(unset)} secret(s) not set; nothing was checked against the live systems")
        return 2
    problems, failures = _check_live(config)
    if failures:
        print("\n".join(str(f) for f in failures))
        print("FAILED: the configuration could not be checked against the live systems")
        return 1
    for problem, places in problems.items():
        print(f"{_where(places)}: {problem}")
    checked = [c.key for c in config.categories if c.direction is not Direction.NONE]
    parked = [c.key for c in config.categories if c.direction is Direction.NONE]
    scope = "the cmdbs" + (f" and categories {', '.join(checked)}" if checked else "")
    not_checked = f"; not checked (direction: none): {', '.join(parked)}" if parked else ""
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {scope}{not_checked}")
        return 1
    print(f"OK: {scope} match C2 ITSM and Hector{not_checked}")
    return 0
