"""BEDS AI front end: a domain described in words becomes a structured domain description.

An OpenAI-compatible chat-completions endpoint (``BEDS_AI_URL``, ``BEDS_AI_MODEL``, the key in
``BEDS_AI_KEY`` or ``BEDS_AI_KEY_FILE``) writes the description only; it is validated like a
hand-written one, and the deterministic generator (``beds new-domain``) writes every database
object from it. docs/ai.md is the guide.

The package imports nothing on import (a node loads :mod:`beds_ai.plugin` at start-up and must
not pay for an HTTP client it never uses): import from the modules below.

=================  ========================================================================
module             what it does
=================  ========================================================================
``settings``       the ``BEDS_AI_*`` variables, checked
``client``         one chat-completions call: structured output, fallback, bounded retries
``prompt``         the messages: the task, the schema, the repair round
``describe``       ask, validate, repair once, or fail naming every problem
``plugin``         the ``beds_describe_domain`` hook
``cli``            ``beds describe-domain``
``errors``         ``AiError``, ``AiUnavailable``, ``AiAnswerInvalid``
=================  ========================================================================
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("beds-ai")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ("__version__",)
