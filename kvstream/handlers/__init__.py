"""One module per Kafka API; the registry they declare themselves in computes ApiVersions.

Owns request -> response behaviour. Must not touch sockets or storage keys directly.

Every handler module is imported here, by name, so that the registry's table is complete
whichever module of the package is imported first (a package's ``__init__`` always runs before
its modules): each handler registers itself with ``@handles`` as it loads. A module missing
from this list fails tests/unit/test_registry.py.
"""

from kvstream.handlers import (  # noqa: F401
    alter_configs,
    api_versions,
    consumer_group_describe,
    consumer_group_heartbeat,
    create_partitions,
    delete_groups,
    delete_records,
    describe_cluster,
    describe_configs,
    describe_groups,
    describe_log_dirs,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    produce,
    sync_group,
    topics,
)
