"""One partition per configured category, keyed by the configuration's `key`."""

import dagster as dg

from hector_sync.config import SyncConfig


def category_partitions(config: SyncConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([c.key for c in config.categories])
