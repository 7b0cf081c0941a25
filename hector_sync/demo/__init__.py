"""The embedded default: where the bundled simulators listen and the demo accounts they accept.

These are demonstration credentials printed by `hector-sync simulate`, not secrets; the demo
configuration still reads them through `{env: VAR}` like any real deployment would.
"""

from pathlib import Path

DEMO_CONFIG_PATH = Path(__file__).with_name("config.yaml")

DEMO_C2_USERNAME = "svc-hector"
DEMO_C2_PASSWORD = "demo-c2-password"
DEMO_C2_READONLY_USERNAME = "svc-readonly"
DEMO_C2_READONLY_PASSWORD = "demo-readonly-password"
DEMO_HECTOR_API_KEY = "demo-hector-key"

DEMO_C2_PORT = 8701
DEMO_HECTOR_PORT = 8702
DEMO_SEED = 42
DEMO_SIZE = 300

DEMO_ENV = {
    "HECTOR_SYNC_DEMO_C2_PASSWORD": DEMO_C2_PASSWORD,
    "HECTOR_SYNC_DEMO_HECTOR_API_KEY": DEMO_HECTOR_API_KEY,
}
