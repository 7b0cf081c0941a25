"""`hector-sync discover` and `hector-sync validate`, run as an operator runs them: the installed
console script, in its own process, against both simulators."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hector_sync.c2 import C2Field
from hector_sync.config import Direction, load_config
from hector_sync.demo import DEMO_C2_PASSWORD, DEMO_CONFIG_PATH, DEMO_ENV, DEMO_HECTOR_API_KEY
from hector_sync.discovery import category_key, guess_mappings
from hector_sync.hector import HectorAttribute
from hector_sync.simulators.serve import RunningSimulators
from hector_sync_tests.conftest import default_signals

HECTOR_SYNC = Path(sys.executable).with_name("hector-sync")

ConfigWriter = Callable[..., Path]


@pytest.fixture
def write_config(simulators: RunningSimulators, tmp_path: Path) -> ConfigWriter:
    """Write the demo configuration pointed at the simulators, after `change` edited its data."""

    def write(change: Callable[[dict[str, Any]], None] = lambda data: None, name: str = "config.yaml") -> Path:
        data = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))
        data["c2"]["url"] = simulators.c2_url
        data["hector"]["url"] = simulators.hector_url
        data["storage"]["duckdb_path"] = str(tmp_path / "state.duckdb")
        change(data)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    return write


def hector_sync(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script with the demo secrets in the environment (or `env` on top)."""
    environment = {k: v for k, v in os.environ.items() if k != "HECTOR_SYNC_CONFIG"} | DEMO_ENV | (env or {})
    return subprocess.run(
        [str(HECTOR_SYNC), "--config", str(config), *args],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )


def test_discover_lists_both_systems(write_config: ConfigWriter) -> None:
    result = hector_sync(write_config(), "discover")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("Production", "Lab", "Printers", "Laptops", "Test devices", "CalibrationDue"):
        assert name in out
    assert any(line.split() == ["Manufacturer", "text", "no"] for line in out.splitlines())
    assert any(line.split() == ["17", "Cables", "lot"] for line in out.splitlines())
    assert any(line.split() == ["Serial", "number", "asset", "text"] for line in out.splitlines())
    for stockroom in ("Main warehouse", "Montréal – Entrepôt B", "東京 倉庫"):
        assert stockroom in out


def test_discover_writes_a_starter_config_that_loads(write_config: ConfigWriter, tmp_path: Path) -> None:
    starter = tmp_path / "starter.yaml"

    result = hector_sync(write_config(), "discover", "--write-config", str(starter))

    assert result.returncode == 0, result.stderr
    text = starter.read_text(encoding="utf-8")
    assert DEMO_C2_PASSWORD not in text and DEMO_HECTOR_API_KEY not in text
    assert "password: {env: HECTOR_SYNC_DEMO_C2_PASSWORD}" in text
    assert text.count("allow_insecure_http: true") == 2  # the simulators' http:// urls load only with it
    config = load_config(starter)
    assert config.c2.allow_insecure_http and config.hector.allow_insecure_http
    assert config.cmdbs == ["Production", "Lab"]
    keys = [c.key for c in config.categories]
    assert keys == ["printers", "laptops", "monitors", "phones", "servers", "test_devices"]
    assert all(c.direction is Direction.NONE for c in config.categories)
    printers = config.category("printers")
    assert printers.model["maker"].c2 == "Manufacturer"
    assert printers.asset_attributes["Serial number"].c2 == "SerialNumber"
    assert config.category("test_devices").hector_category == "Test devices"  # no such Hector category


def test_switching_on_a_written_category_validates(write_config: ConfigWriter, tmp_path: Path) -> None:
    """The guessed names are real ones: switched on as written, the categories pass validate."""
    starter = tmp_path / "starter.yaml"
    assert hector_sync(write_config(), "discover", "--write-config", str(starter)).returncode == 0
    data = yaml.safe_load(starter.read_text(encoding="utf-8"))
    for category in data["categories"]:
        if category["cmdb"] == "Production":
            category["direction"] = "c2_to_hector"
    starter.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")

    result = hector_sync(starter, "validate")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "not checked (direction: none): test_devices" in result.stdout


def test_discover_refuses_to_overwrite(write_config: ConfigWriter, tmp_path: Path) -> None:
    existing = tmp_path / "mine.yaml"
    existing.write_text("# my own work\n", encoding="utf-8")

    result = hector_sync(write_config(), "discover", "--write-config", str(existing))

    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert existing.read_text(encoding="utf-8") == "# my own work\n"


def test_validate_passes_on_the_demo_config(write_config: ConfigWriter) -> None:
    result = hector_sync(write_config(), "validate")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == (
        "OK: the cmdbs and categories printers, laptops, monitors match C2 ITSM and Hector; "
        "not checked (direction: none): phones, servers"
    )


def _wrong_names(data: dict[str, Any]) -> None:
    """One wrong name of each kind; phones and servers are switched on to be checked."""
    printers, laptops, monitors, phones, servers = data["categories"]
    data["cmdbs"].append("Nowhere")
    printers["cmdb"] = "Nowhere"
    laptops["c2_category"] = "Laptopz"
    monitors["model"]["maker"] = "Manufactor"
    monitors["asset_attributes"]["Colour"] = "Owner"
    monitors["asset_attributes"]["Form factor"] = "Model"  # exists, but for subcategories
    phones.update(direction="c2_to_hector", hector_category="Scanners")
    servers.update(direction="c2_to_hector", hector_category="Cables")  # a lot category
    data["default_stockroom"] = "Basement"


def test_validate_names_every_wrong_name(write_config: ConfigWriter) -> None:
    result = hector_sync(write_config(_wrong_names), "validate")

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    expected = [
        ("cmdbs", "'Nowhere'"),
        ("printers", "'Nowhere'"),
        ("laptops", "'Laptopz'"),
        ("monitors", "'Manufactor'"),
        ("monitors", "'Colour'"),
        ("monitors", "'Form factor' with scope asset"),
        ("phones", "'Scanners'"),
        ("servers", "'Cables' is of type lot"),
        ("laptops", "'Basement'"),
    ]
    missing = [pair for pair in expected if not any(all(part in line for part in pair) for line in lines)]
    assert not missing, result.stdout
    assert lines[-1].startswith("FAILED: ")


def test_validate_reports_rejected_credentials_without_the_password(write_config: ConfigWriter) -> None:
    wrong = "not-the-password-7731"

    result = hector_sync(write_config(), "validate", env={"HECTOR_SYNC_DEMO_C2_PASSWORD": wrong})

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "C2 ITSM rejected the credentials of svc-hector" in output
    assert "HECTOR_SYNC_DEMO_C2_PASSWORD" in output  # where to fix it
    assert wrong not in output


def test_validate_names_an_unset_secret(write_config: ConfigWriter) -> None:
    result = hector_sync(write_config(), "validate", env={"HECTOR_SYNC_DEMO_HECTOR_API_KEY": ""})

    assert result.returncode == 2
    assert "hector.api_key: the environment variable HECTOR_SYNC_DEMO_HECTOR_API_KEY is not set" in result.stdout


def test_category_keys_are_valid_and_unique() -> None:
    taken: set[str] = set()

    keys = [category_key(name, taken) for name in ("Printers", "Printers", "Écrans / Moniteurs", "東京", "Hand-helds")]

    assert keys == ["printers", "printers_2", "ecrans_moniteurs", "category", "hand-helds"]


def test_mapping_guesses_follow_obvious_names() -> None:
    fields = [C2Field(id=str(i), name=n, type="text", required=False)
              for i, n in enumerate(("Maker", "Model", "Description", "Serial No", "Price", "Colour"))]
    attributes = [HectorAttribute(id=1, name="Serial number", scope="asset", type="text")]

    sections = guess_mappings(fields, attributes)

    assert sections == {
        "model": {"maker": "Maker", "model": "Model", "description": "Description", "price": "Price"},
        "model_attributes": {},
        "asset": {"title": "Name"},
        "asset_attributes": {"Serial number": "Serial No"},
    }


def test_discover_needs_only_c2_and_hector(tmp_path: Path) -> None:
    """A new user's first steps, by hand: `simulate` in one shell (on free ports), then `discover`
    on a file that names only the two systems, before any category or storage exists."""
    env = {k: v for k, v in os.environ.items() if k != "HECTOR_SYNC_CONFIG"} | {"PYTHONUNBUFFERED": "1"}
    sim = subprocess.Popen([str(HECTOR_SYNC), "simulate", "--c2-port", "0", "--hector-port", "0"],
                           stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=env, start_new_session=True,
                           preexec_fn=default_signals)
    try:
        assert sim.stdout is not None
        c2_url, hector_url = (sim.stdout.readline().split()[-1] for _ in range(2))
        demo = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))
        systems = tmp_path / "systems.yaml"
        systems.write_text(yaml.safe_dump({"c2": demo["c2"] | {"url": c2_url},
                                           "hector": demo["hector"] | {"url": hector_url}}), encoding="utf-8")

        shown = hector_sync(systems, "discover")
        assert shown.returncode == 0, shown.stderr
        for name in ("Production", "Lab", "Printers", "Laptops", "Servers", "Serial number", "Main warehouse"):
            assert name in shown.stdout
        assert f"C2 ITSM ({c2_url}): CMDBs" in shown.stdout and f"Hector ({hector_url}): categories" in shown.stdout

        # the starter it writes loads and validates as it is: placeholders where the file had nothing
        starter = tmp_path / "starter.yaml"
        written = hector_sync(systems, "discover", "--write-config", str(starter))
        assert written.returncode == 0, written.stderr
        config = load_config(starter)
        assert (config.c2.url, config.hector.url) == (c2_url, hector_url)
        assert config.default_stockroom == "Main warehouse"  # Hector's first stockroom
        assert config.storage.duckdb_path == tmp_path / "hector_sync.duckdb"  # beside the starter
        assert all(c.direction is Direction.NONE for c in config.categories)
        checked = hector_sync(starter, "validate")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(timeout=30)

    # every other command still needs the rest, and says which section is missing
    refused = hector_sync(systems, "validate")
    assert refused.returncode == 2
    assert refused.stderr == (f"hector-sync: {systems}: section 'notify_on_error': required, but missing from the "
                              "file (`discover` alone runs on a file with only the c2 and hector sections)\n")
