"""Trying a transiently failed store call again, with exponential back-off and jitter.

Off the hot path: only a call that already failed transiently gets here.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from loguru import logger
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from beds.errors import RequestError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tenacity.stop import stop_base

    from beds.config.model import ReliabilitySettings

__all__ = ("retry_transient",)


async def retry_transient(
    call: Callable[[], Awaitable[Any]],
    first: RequestError,
    *,
    settings: ReliabilitySettings,
    event_id: str,
    deadline: float | None,
    on_retry: Callable[[], None],
) -> Any:
    """Call ``call`` again after it failed with the transient error ``first``.

    Stops after ``settings.retry_attempts`` tries in all (the first one included), or when the
    next wait would pass the deadline; then the last error is raised. ``on_retry`` is called
    before each new try (the dispatcher counts them).
    """
    if settings.retry_attempts <= 1:
        raise first
    stop: stop_base = stop_after_attempt(settings.retry_attempts - 1)
    if deadline is not None:
        stop = stop | stop_before_delay(max(0.0, deadline - time.time()))
    retrying = AsyncRetrying(
        stop=stop,
        wait=wait_exponential_jitter(
            multiplier=settings.retry_initial_delay,
            max=settings.retry_max_delay,
            jitter=settings.retry_initial_delay,
        ),
        retry=retry_if_exception(lambda exc: isinstance(exc, RequestError) and exc.TRANSIENT),
        before_sleep=lambda state: logger.warning(
            "request {} failed transiently ({}); retrying", event_id, first.CODE
        ),
        reraise=True,
    )
    await asyncio.sleep(settings.retry_initial_delay)
    async for attempt in retrying:
        with attempt:
            on_retry()
            return await call()
    raise first  # pragma: no cover - reraise=True raises the last error instead
