"""Hook specifications for BEDS plugins.

Hooks are synchronous and called at start-up (IPL) or shutdown; the two dispatch hooks are called
per message only when some plugin implements them. Async work lives on the objects hooks register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from beds.auth.principal import Principal
    from beds.envelopes import Request, Response
    from beds.handlers import HandlerRegistry
    from beds.namaste import StoreSettings
    from beds.nodeinfo import NodeInfo
    from beds.provision.needs import StoreProvisioner
    from beds.registry import AdapterRegistry, TemplateRegistry
    from beds.templates.model import Template

__all__ = (
    "beds_after_dispatch",
    "beds_authenticate",
    "beds_before_dispatch",
    "beds_describe_domain",
    "beds_node_started",
    "beds_node_stopping",
    "beds_register_adapters",
    "beds_register_handlers",
    "beds_register_templates",
    "beds_store_provisioner",
)

_spec = pluggy.HookspecMarker("beds")


@_spec
def beds_register_adapters(registry: AdapterRegistry) -> None:
    """Register store adapters (NamasteCore implementations).

    Called once per node during IPL, after configuration is loaded and before templates are
    registered: through the plugin manager like every hook, one plugin at a time (last
    registered first), so that a duplicate store names both plugins.

    Args:
        registry: call ``registry.add(store="rel", factory=make_adapter)``; ``factory`` takes a
            :class:`beds.namaste.StoreSettings` and returns a :class:`beds.namaste.NamasteCore`.
            Registering a store another plugin already registered raises ``PluginError``.

    .. versionadded:: 0.1
    """


@_spec
def beds_register_templates(registry: TemplateRegistry) -> None:
    """Register a data domain's templates and DBA schema shipped as package data.

    Called once per node during IPL, after adapters are registered.

    Args:
        registry: call ``registry.add_package(__package__)`` to add ``templates/*.toml`` and
            ``schema/<store>/*`` from the package. A template name that is already registered
            raises ``PluginError`` naming both sources.

    .. versionadded:: 0.1
    """


@_spec
def beds_register_handlers(registry: HandlerRegistry) -> None:
    """Register a data domain's own step for an operation of its template (:mod:`beds.handlers`).

    Called once per node during IPL, after templates are registered.

    Args:
        registry: call ``registry.add("beds_session", "create", login)``; a second handler for
            the same template and operation raises ``PluginError`` naming both.

    .. versionadded:: 0.2
    """


@_spec
def beds_node_started(node: NodeInfo) -> Any:
    """React to a node that finished IPL and is consuming.

    Args:
        node: the node's name, role, environment and templates.

    Returns:
        ``None``, or an awaitable the node awaits before reporting ready.

    .. versionadded:: 0.1
    """


@_spec
def beds_node_stopping(node: NodeInfo) -> Any:
    """React to a node that stopped consuming and is about to close its stores.

    Args:
        node: the node's name, role, environment and templates.

    Returns:
        ``None``, or an awaitable the node awaits before closing connections.

    .. versionadded:: 0.1
    """


@_spec(firstresult=True)
def beds_authenticate(credential: str) -> Principal | None:
    """Turn a request's credential into its principal, before the built-in authenticators.

    Called per request that carries a credential (the ``authorization`` header), only when some
    plugin implements it; the first plugin that returns a principal decides. A plugin that does
    not know the credential returns ``None``, and the next one, then the built-in BEDS session
    tokens and OIDC tokens, are asked. Raise :class:`beds.errors.Unauthenticated` to refuse the
    credential outright. It must not block: look keys up in memory (an API-key table loaded at
    start-up, for example), never in a database per request.

    Args:
        credential: the header's value, such as ``"Bearer …"`` or ``"ApiKey …"``.

    Returns:
        a :class:`beds.auth.Principal`, or ``None``.

    .. versionadded:: 0.2
    """


@_spec
def beds_before_dispatch(request: Request, template: Template) -> Any:
    """Inspect a validated request before its adapter runs it.

    Called per message, only when at least one plugin implements it. Raise a
    :class:`beds.errors.RequestError` (for example ``Unauthorized``) to refuse the request; the
    caller receives it as the error reply.

    Args:
        request: the decoded request.
        template: the template it addresses.

    Returns:
        ``None``, or an awaitable the broker awaits.

    .. versionadded:: 0.1
    """


@_spec
def beds_after_dispatch(request: Request, response: Response) -> Any:
    """Observe a request's response before it is sent.

    Called per message, only when at least one plugin implements it. Exceptions are logged and
    do not change the response.

    Args:
        request: the decoded request (``None`` fields are as received).
        response: the response about to be published.

    Returns:
        ``None``, or an awaitable the broker awaits.

    .. versionadded:: 0.1
    """


@_spec
def beds_store_provisioner(settings: StoreSettings) -> StoreProvisioner | None:
    """Describe and provision the service accounts of a store this plugin serves.

    Called by ``beds provision`` and ``beds check --production`` only (never by a serving
    node), once per connection (a store's default one, each named database), on every plugin;
    the one that serves ``settings.store`` answers.

    Args:
        settings: the store's configuration table (``[stores.<name>]``).

    Returns:
        a :class:`beds.provision.needs.StoreProvisioner` built from ``settings``, or ``None``
        for a store of another plugin.

    Raises:
        ConfigError: the table is invalid (the message names the key).

    .. versionadded:: 0.2
    """


@_spec(firstresult=True)
def beds_describe_domain(text: str) -> dict[str, Any] | None:
    """Turn a natural-language description of a data domain into a structured description.

    Called by ``beds describe-domain`` only (never by a serving node); the first plugin that
    returns a description decides. A plugin that cannot answer (not configured) returns
    ``None``. The answer is only the description, the data a ``description.toml`` holds
    (:doc:`generator`); the caller validates it again with
    :func:`beds.generator.description.parse_description`, and the deterministic generator
    writes every database object from it, so no answer reaches the DBA unchecked. beds-ai
    implements it against an OpenAI-compatible chat-completions endpoint (:doc:`ai`).

    Args:
        text: what the domain is, in the user's words ("a library with books and loans…").

    Returns:
        the description as a table (TOML's data model), or ``None``.

    Raises:
        BedsError: the plugin is configured but could not produce a valid description; the
            message says why and never contains a credential.

    .. versionadded:: 0.2
    """
