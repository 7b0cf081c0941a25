"""Every run tag the sync sets or reads, defined once, each with who sets it and who reads it.

Dagster keeps a run's tags with the run: the Runs page shows them and filters by them. No
Dagster import here, so the command line and the e-mail can name the tags too.
"""

# How the run's snapshots read: "full" or "incremental". Set by the daily schedules
# (defs/schedules.py: full on full_sync_weekday), by `hector-sync sync --full` (runner.run_sync)
# and by hand in the launchpad; read by the snapshot assets (defs/assets.read_mode), which,
# without it, read in full on full_sync_weekday only.
READ_TAG = "hector_sync/read"

# "true" lets a change set that fails change_size_guard through. Set by `hector-sync sync` and
# `apply` with --allow-large-change (runner.py) and by hand in the launchpad, never by a
# schedule; read by the change sets' check, the writebacks and undo_run
# (defs/assets.large_change_allowed).
ALLOW_LARGE_CHANGE_TAG = "hector_sync/allow_large_change"

# "true" on the runs of `hector-sync plan` (runner.run_sync): the category's job up to its change
# sets and their checks, never its writebacks. Read by the run-failure sensor, which e-mails
# nobody about them: whoever asked for the plan is reading its output. The Runs page filters by it.
PLAN_TAG = "hector_sync/plan_only"

# The external systems a run calls, "true" on every run: every job reads both snapshots. Set by
# every job (defs/jobs.build_jobs) and by `hector-sync apply` (runner.run_plan, whose implicit
# asset job has no tags of its own); read by the run queue of the production instance, which caps
# how many runs talk to each system at once (deploy/dagster.yaml: tag_concurrency_limits).
C2_ITSM_TAG = "hector_sync/c2_itsm"
HECTOR_TAG = "hector_sync/hector"
SYSTEM_TAGS: dict[str, str] = {C2_ITSM_TAG: "true", HECTOR_TAG: "true"}

# Whether a failed run's e-mail left: "sent", else "not sent, the sensor retries: …". Set and
# read by the run-failure sensor (defs/sensors.py), so that a retried tick never sends it twice.
EMAIL_TAG = "hector_sync/failure_email"

# Dagster's own: the partition (category key) of a run. Set by Dagster; read by StoreResource
# (defs/resources.py) to hold the category's lock for the whole run, and by the failure e-mail
# (notify.failure_report) to name the category.
PARTITION_TAG = "dagster/partition"
