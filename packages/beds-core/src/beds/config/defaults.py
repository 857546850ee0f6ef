"""Built-in configuration: the seed roles and the development default node.

Everything here can be overridden by a config file, an ``env_{BEDS_ENV}.toml`` file, or
``BEDS__SECTION__KEY`` environment variables (see docs/configuration.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ("DEFAULTS", "DEVELOPMENT_STORES")

# Routing keys are "{template}.{class}": class is read (fetch, ticket, ping), write (create,
# update, delete), meta (submit) or admin (the node's own templates, such as beds_lineage).
# The seed roles bind the classes; the admin node answers admin requests and stores the logs
# exchange's lineage events; segundo schedules the retention sweeps and runs their tickets (the
# warehouse lane). No seed broker is a placeholder: a seed broker cannot be removed by
# configuration (tables merge), so only brokers with work in every deployment are seeded.
# Not seeded, and why (docs/configuration.md, "Seed roles"):
# - cBroker: the fetch cache is each node's own, invalidated on every node through the control
#   channel (beds.dispatch.cache), so a cache broker would have no work.
# - the tercero role (uBroker, sBroker): bound by default to beds_user.* / beds_session.*, its
#   queues would get a second copy of what appServer's *.read / *.write queues get; a deployment
#   that moves users and sessions to their own role declares it whole (docs/deployment.md).
# - adminSyslogBroker, which needs a receiver ([syslog] target; docs/telemetry.md shows how to
#   add it), and adminGraphBroker: every node serves /metrics, and Prometheus keeps their history.
DEFAULTS: dict[str, Any] = {
    "schema_version": 1,
    "roles": {
        "appServer": {
            "brokers": {
                "rBroker": {"instances": 8, "bindings": ["*.read"]},
                "wBroker": {"instances": 8, "bindings": ["*.write"]},
                "mBroker": {"instances": 2, "bindings": ["*.meta"]},
            }
        },
        "admin": {
            "brokers": {
                "adminBrokerIn": {"instances": 2, "bindings": ["*.admin"]},
                "adminLogsBroker": {"instances": 2, "type": "logs", "bindings": ["log.#"]},
            }
        },
        "segundo": {
            "brokers": {
                # calgon.retention_broker: it schedules the sweeps and runs 2 of them at once.
                "whBroker": {"instances": 2, "type": "tickets", "lane": "warehouse"},
            }
        },
    },
}

DEVELOPMENT_STORES: dict[str, Any] = {
    "rel": {"url": "mysql://root@127.0.0.1:3306/beds_dev"},
    # No uri: the REC adapter starts an embedded MongoDB wire server (beds-rec[embedded]).
    "rec": {"database": "beds_dev"},
}
"""Stores of the development default node (``beds run`` with no ``--config``)."""
