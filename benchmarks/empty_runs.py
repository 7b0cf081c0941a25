"""Figure 7's floor: what Dagster alone costs per category, under the run model `hector-sync sync`
keeps (one run per category partition, in one process, on a persistent SQLite instance).

The same run shape as a category syncing C2 ITSM → Hector: six partitioned assets in the same
lineage, three blocking checks on the change set, six log lines, each step doing nothing else.

    python benchmarks/empty_runs.py N DAGSTER_HOME   # one run per each of N categories
"""

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

gc.disable()  # start-up as `hector-sync` runs it (cli._start_up): its objects frozen once made
import dagster as dg  # noqa: E402

from hector_sync.instance import local_instance  # noqa: E402

STEPS = {  # asset → (its upstream assets, the log lines its step writes)
    "category_catalog": ((), 0),
    "c2_cmdb_snapshot": (("category_catalog",), 1),
    "hector_inventory_snapshot": (("category_catalog",), 2),
    "desired_hector_models": (("c2_cmdb_snapshot",), 0),
    "hector_change_set": (("desired_hector_models", "hector_inventory_snapshot"), 1),
    "hector_writeback": (("hector_change_set",), 2),
}
CHECKS = ("mapping_valid", "unique_ci_ids", "change_size_guard")


def definitions(count: int) -> dg.Definitions:
    partitions = dg.StaticPartitionsDefinition([f"category-{i:02d}" for i in range(1, count + 1)])

    def empty(name: str, deps: tuple[str, ...], logs: int) -> dg.AssetsDefinition:
        checks = [dg.AssetCheckSpec(c, asset=name, blocking=True) for c in CHECKS] if name == "hector_change_set" else []

        @dg.asset(name=name, deps=list(deps), partitions_def=partitions, check_specs=checks)
        def _step(context: dg.AssetExecutionContext) -> Iterator:
            for line in range(logs):
                context.log.info(f"{context.partition_key}: line {line}")
            yield dg.MaterializeResult(metadata={"dagster/row_count": 0})
            for check in checks:
                yield dg.AssetCheckResult(check_name=check.name, passed=True)

        return _step

    assets = [empty(name, deps, logs) for name, (deps, logs) in STEPS.items()]
    return dg.Definitions(assets=assets, jobs=[dg.define_asset_job("sync", selection=list(STEPS))])


def main(count: int, home: str) -> None:
    local_instance(Path(home))  # as `hector-sync` makes a new DAGSTER_HOME
    os.environ["DAGSTER_HOME"] = home
    job = definitions(count).resolve_job_def("sync")
    gc.freeze()
    gc.enable()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.get() as instance:
        for key in job.partitions_def.get_partition_keys():  # type: ignore[union-attr]
            assert job.execute_in_process(partition_key=key, instance=instance, run_config=quiet).success


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
