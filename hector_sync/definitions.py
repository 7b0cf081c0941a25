"""The Dagster code location: `dagster dev -w workspace.yaml` and `hector-sync sync` load this."""

import dagster as dg

defs = dg.Definitions()
