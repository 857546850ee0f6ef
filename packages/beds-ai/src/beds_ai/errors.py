"""What beds-ai raises: operator-side errors (they never cross the wire, so they have no code).

::

    BedsError
    └── AiError                 the AI front end could not produce a description
        ├── AiUnavailable       the endpoint could not be reached, timed out or refused the call
        └── AiAnswerInvalid     the answer was not a valid description, even after one repair

Messages name what went wrong and never hold the API key: text that comes from the endpoint
(its error message) passes through :func:`redact` first.
"""

from __future__ import annotations

from beds.errors import BedsError

__all__ = ("AiAnswerInvalid", "AiError", "AiUnavailable", "redact")

_SHOWN = 300
"""How much of an endpoint's own error message is quoted."""


class AiError(BedsError):
    """The AI front end could not produce a description."""


class AiUnavailable(AiError):
    """The endpoint could not be reached, did not answer in time, or refused the request.

    Attributes:
        status: the last HTTP status, or ``None`` when no response came.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AiAnswerInvalid(AiError):
    """The model's answer was refused by the description's validation, twice.

    Attributes:
        problems: the problem found in each answer, first answer first.
    """

    def __init__(self, message: str, *, problems: tuple[str, ...]) -> None:
        self.problems = problems
        super().__init__(message)


def redact(text: str, secret: str | None, limit: int = _SHOWN) -> str:
    r"""``text`` without ``secret``, on one line, escaped, shortened to ``limit`` characters.

    Text from a model or an endpoint may hold terminal escapes (a field name with ``\x1b[2J``);
    they are shown as escapes, never sent to the terminal.
    """
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
