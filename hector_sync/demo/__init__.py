"""The embedded default: where the bundled simulators listen and the demo accounts they accept.

These are demonstration credentials printed by `hector-sync simulate`, not secrets; the demo
configuration still reads them through `{env: VAR}` like any real deployment would.
"""

from pathlib import Path

DEMO_CONFIG_PATH = Path(__file__).with_name("config.yaml")
# The demo's own folder in the working directory (the package folder may be read-only): its
# DuckDB file, its Dagster instance, and DEMO_COPY_NAME, the configuration it actually runs.
DEMO_FOLDER = ".hector-sync"
DEMO_COPY_NAME = "demo.yaml"

DEMO_C2_USERNAME = "svc-hector"
DEMO_C2_PASSWORD = "demo-c2-password"
DEMO_C2_READONLY_USERNAME = "svc-readonly"
DEMO_C2_READONLY_PASSWORD = "demo-readonly-password"
DEMO_HECTOR_API_KEY = "demo-hector-key"

# The ports the embedded configuration and the README name; `hector-sync demo` takes others when busy.
DEMO_C2_PORT = 8701
DEMO_HECTOR_PORT = 8702
DEMO_UI_PORT = 3000
DEMO_SEED = 42
DEMO_SIZE = 300

DEMO_ENV = {
    "HECTOR_SYNC_DEMO_C2_PASSWORD": DEMO_C2_PASSWORD,
    "HECTOR_SYNC_DEMO_HECTOR_API_KEY": DEMO_HECTOR_API_KEY,
}


def loopback_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def is_demo_file(file: Path) -> bool:
    """The embedded configuration or the copy `hector-sync demo` runs: the files whose demo
    credentials the loader may put in the environment."""
    resolved = file.resolve()
    return resolved == DEMO_CONFIG_PATH.resolve() or (
        resolved.name == DEMO_COPY_NAME and resolved.parent.name == DEMO_FOLDER)


def write_demo_copy(c2_url: str, hector_url: str) -> Path:
    """The embedded configuration with the URLs of the simulators this demo started, written to
    ./.hector-sync/demo.yaml: the demo's sync, the Dagster UI it serves and any command given
    `--config` that file then talk to them, whichever ports they took. Rewritten at every demo."""
    text = DEMO_CONFIG_PATH.read_text(encoding="utf-8")
    for default, url in ((loopback_url(DEMO_C2_PORT), c2_url), (loopback_url(DEMO_HECTOR_PORT), hector_url)):
        assert text.count(f"url: {default}") == 1, f"{DEMO_CONFIG_PATH} no longer names {default} once"
        text = text.replace(f"url: {default}", f"url: {url}")
    copy = Path.cwd() / DEMO_FOLDER / DEMO_COPY_NAME
    copy.parent.mkdir(exist_ok=True)
    header = ("# Written by `hector-sync demo` when it started: the embedded demo configuration\n"
              "# (hector_sync/demo/config.yaml) with the URLs of the simulators it runs. While it runs, any\n"
              f"# command reaches them with `hector-sync --config {DEMO_FOLDER}/{DEMO_COPY_NAME} COMMAND`.\n")
    copy.write_text(header + text, encoding="utf-8")
    return copy
