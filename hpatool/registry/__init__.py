"""The dataset registry: one SQLite file under the hpatool home.

Home: ``--home`` > ``HPATOOL_HOME`` > the platform's user data dir. WAL journal, a busy timeout
so that concurrent commands wait instead of failing, and a schema version in
``PRAGMA user_version`` with ordered migrations. Each command does its writes in one
``transaction()``, so a failed command leaves the registry as it was.

The package: ``schema`` (migrations), ``records`` (record types, value checks), ``connection``
(home, connecting, SQLite errors), ``transaction`` (the unit of work), ``datasets``, ``folds``,
``runs``, ``dedup`` and ``experiments`` (the queries, by table), ``core`` (``Registry``,
composed of them).
"""

from hpatool.registry.connection import BUSY_TIMEOUT_S, REGISTRY_FILE, resolve_home
from hpatool.registry.core import Registry
from hpatool.registry.records import (
    FINISHED_STATUSES,
    KINDS,
    DatasetRecord,
    ExperimentRecord,
    RunRecord,
    RunStatus,
    Sample,
    bad_row,
    check_name,
    now,
)
from hpatool.registry.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "BUSY_TIMEOUT_S",
    "FINISHED_STATUSES",
    "KINDS",
    "MIGRATIONS",
    "REGISTRY_FILE",
    "SCHEMA_VERSION",
    "DatasetRecord",
    "ExperimentRecord",
    "Registry",
    "RunRecord",
    "RunStatus",
    "Sample",
    "bad_row",
    "check_name",
    "now",
    "resolve_home",
]
