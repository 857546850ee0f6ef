"""Service accounts: one least-privilege identity per node role, on every service it uses.

==================  =========================================================================
module              what it holds
==================  =========================================================================
``needs``           what a role uses: the templates it serves and the operations routed to
                    it; the shapes a store's provisioner works with (``Grant``,
                    ``StoreNeeds``, ``StoreAccount``, the ``StoreProvisioner`` Protocol)
``plan``            the plan of every role, computed from the configuration and the installed
                    templates before anything is touched
``rabbitmq``        RabbitMQ: the permission regexes of a role and of clients, applied and
                    reviewed through ``rabbitmqctl``
``passwords``       where a service account's password comes from, and the secret files
``review``          ``beds check --production``: the policy and the privileges accounts have
==================  =========================================================================

Nothing is imported here, so :mod:`beds.provision.needs` (a lower layer, docs/architecture.md)
imports without the rest; import the modules themselves.
"""
