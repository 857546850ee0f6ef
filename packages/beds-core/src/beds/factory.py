"""The factory: template name → (template, adapter). The only place a store meets an adapter.

Adapters are keyed by connection (:attr:`beds.templates.model.Template.connection`): a store's
default one by the store's name (``rel``), a named database's as ``rel.warehouse``. Built once
at start-up; a request then costs one dictionary look-up.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import TYPE_CHECKING

from beds.errors import UnknownTemplate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.namaste import NamasteCore
    from beds.templates.model import Template

__all__ = ("Factory",)


class Factory:
    """Resolve template names to their declaration and the adapter of their connection.

    Args:
        templates: the served templates by name.
        adapters: connection → adapter; a template whose connection has none is not served.
        builtins: templates BEDS declares itself, each with the object that runs it (the
            schema migration ticket's ``beds_schema``, :mod:`beds.calgon.migrate`).
    """

    def __init__(
        self,
        templates: Mapping[str, Template],
        adapters: Mapping[str, NamasteCore],
        builtins: Mapping[str, tuple[Template, NamasteCore]] | None = None,
    ) -> None:
        self._routes: dict[str, tuple[Template, NamasteCore]] = {
            name: (template, adapters[template.connection])
            for name, template in templates.items()
            if template.connection in adapters
        }
        self._routes.update(builtins or {})

    @property
    def templates(self) -> dict[str, Template]:
        """The templates this factory serves."""
        return {name: template for name, (template, _) in self._routes.items()}

    def resolve(self, name: str) -> tuple[Template, NamasteCore]:
        """Return the template and its adapter.

        Raises:
            UnknownTemplate: no served template has that name; the details suggest the closest
                served name, if one is close (``did you mean 'spew_post'?``).
        """
        try:
            return self._routes[name]
        except KeyError:
            details = [f"template: {name}"]
            close = get_close_matches(name, sorted(self._routes), n=1)
            if close:
                details.append(f"did you mean {close[0]!r}?")
            raise UnknownTemplate(
                "no template of that name is served by this node", details=details
            ) from None
