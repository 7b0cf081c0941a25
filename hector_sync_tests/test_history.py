"""`hector-sync history ITEM`: the life of one printer, created, edited, moved and retired by
four syncs through Dagster against both simulators, read back by the console script under
each of its names (CI id, asset id, asset tag)."""

from __future__ import annotations

from pathlib import Path

from hector_sync.c2 import C2Client
from hector_sync.config import SyncConfig, load_config
from hector_sync.runner import run_sync
from hector_sync.simulators.serve import start_simulators
from hector_sync.store import Store
from hector_sync_tests.conftest import WriteConfig
from hector_sync_tests.console import hector_sync
from hector_sync_tests.systems import c2_cis, hector_state, patch_ci, printers_retiring, refs

NEW_SERIAL = "SN-NEW\x1b[31m"  # a terminal escape: it must print as text, not turn the screen red


def sync(config: SyncConfig) -> tuple[str, str]:
    """One printers run; its Dagster run id and the id of the plan it applied."""
    [result] = run_sync(config, str(config.source), ["printers"], full=True)
    assert result.success and not result.error, result.error
    [[plan_id]] = Store(config.storage.duckdb_path).query(
        "SELECT plan_id FROM plan WHERE run_id = ?", [result.run_id]).rows()
    return result.run_id, plan_id


def changes(stdout: str) -> tuple[str, list[tuple[str, ...]]]:
    """The header line, and per change (run, plan, category, action, outcome, what changed)."""
    header, columns, *lines = stdout.splitlines()
    assert columns.split()[:3] == ["when", "(UTC)", "run"]
    return header, [tuple(line.split(maxsplit=7)[2:]) for line in lines]


def test_history_tells_the_life_of_one_printer_by_ci_asset_and_tag_through_its_undo(write_config: WriteConfig) -> None:
    with start_simulators(size=4, sizes={"Printers": 12}) as sims:
        path = write_config(sims.c2_url, sims.hector_url, edit=printers_retiring)
        config = load_config(path)

        created = sync(config)
        models, assets, _ = hector_state(config, "Printers")
        asset = min((a for a in assets if refs(a)), key=lambda a: a["id"])
        ci_id, asset_id, tag = refs(asset)[0], str(asset["id"]), asset["asset_tag"]
        serial = next(ci for ci in c2_cis(config, "Printers") if ci["id"] == ci_id)["fields"]["SerialNumber"]
        model = models[asset["subcategory_id"]]

        patch_ci(config, ci_id, SerialNumber=NEW_SERIAL)
        updated = sync(config)
        patch_ci(config, ci_id, Manufacturer="Brother", Model="HL-HISTORY-1")
        moved = sync(config)
        with C2Client.from_settings(config.c2) as c2:
            current = c2.get_ci(ci_id)
            assert current is not None
            c2.update_ci(ci_id, current["version"], status="retired")
        retired = sync(config)
        undone = hector_sync("--config", str(path), "undo", retired[0], "--yes")
        assert undone.returncode == 0, undone.stdout + undone.stderr

        outputs = [hector_sync("--config", str(path), "history", name) for name in (ci_id, asset_id, f" {tag} ")]
        unknown = hector_sync("--config", str(path), "history", "ci-00000000")

    for out in outputs:
        assert (out.returncode, out.stderr) == (0, "")
        assert "\x1b" not in out.stdout
    assert outputs[1].stdout == outputs[0].stdout == outputs[2].stdout
    header, rows = changes(outputs[0].stdout)
    assert header == f"Hector asset {asset_id} (asset tag {tag!r}), C2 ITSM CI {ci_id}: {len(rows)} changes"

    creates = [r for r in rows if r[:2] == created]
    assert [r[2:5] for r in creates] == [("printers", "create_asset", "created")] * len(creates)
    assert {f"asset_tag: ∅ → {tag!r}", f"attributes.Serial number: ∅ → {serial!r}"} <= {r[5] for r in creates}
    old_model = " / ".join(model[k] for k in ("maker", "model", "description"))
    assert rows[len(creates):] == [
        (*updated, "printers", "update_asset", "updated",
         f"attributes.Serial number: {serial!r} → 'SN-NEW\\x1b[31m'"),
        (*moved, "printers", "move_asset", "moved",
         f"subcategory: {old_model!r} → 'Brother / HL-HISTORY-1 / {model['description']}'"
         " — its maker, model or description changed in C2 ITSM"),
        (*retired, "printers", "retire_asset", "retired",
         f"status: {asset['status']!r} → 'retired' — the CI is retired in C2 ITSM"),
        rows[-1][:2] + ("printers", "reactivate_asset", "reactivated",
                        f"status: 'retired' → {asset['status']!r} — undo of run {retired[0]}: status back to "
                        f"{asset['status']!r}"),
    ]
    assert rows[-1][0] not in (created[0], updated[0], moved[0], retired[0]), "the undo is a run of its own"

    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip() == (
        "hector-sync history: no change recorded for 'ci-00000000' as a C2 ITSM CI id, a Hector asset id "
        f"or an asset tag in {config.storage.duckdb_path}.")


def test_history_before_any_sync_says_so_and_creates_no_file(write_config: WriteConfig) -> None:
    path = write_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    duckdb_file = load_config(path).storage.duckdb_path

    out = hector_sync("--config", str(path), "history", "PRN-0042")

    assert (out.returncode, out.stdout) == (1, "")
    assert "no change recorded for 'PRN-0042' as a C2 ITSM CI id, a Hector asset id or an asset tag" in out.stderr
    assert "does not exist: no sync has run" in out.stderr
    assert not duckdb_file.exists() and not Path(f"{duckdb_file}.lock").exists()
