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
# exchange's lineage events; segundo and tercero brokers are bound to domain templates by
# configuration. Not seeded, as a seed broker cannot be removed by configuration (tables merge):
# adminSyslogBroker, which needs a receiver ([syslog] target; docs/telemetry.md shows how to add
# it), and adminGraphBroker: every node serves /metrics, and Prometheus keeps their history.
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
                "whBroker": {"instances": 2, "bindings": []},
                "cBroker": {"instances": 2, "bindings": []},
            }
        },
        "tercero": {
            "brokers": {
                "uBroker": {"instances": 4, "bindings": []},
                "sBroker": {"instances": 4, "bindings": []},
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
