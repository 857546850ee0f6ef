"""The store call: within the request's deadline, tried again after a transient failure.

A read, or a write with an idempotency key, is tried again with exponential back-off and jitter
(tenacity) after a transient failure; a keyless write is not, since it may have run. Off the hot
path: only a call that already failed transiently is retried.
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

from beds.errors import DeadlineExceeded, RequestError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tenacity.stop import stop_base

    from beds.config.model import ReliabilitySettings
    from beds.namaste import CallContext

__all__ = ("IN_DOUBT", "call_store", "retry_transient")

IN_DOUBT = (
    "the write may or may not have been executed: send it again with the same idempotency key "
    "to get its outcome"
)
"""The detail added to a write's transient failure: the connection may have dropped after the
database committed."""


async def call_store(
    call: Callable[[], Awaitable[Any]],
    ctx: CallContext,
    *,
    write: bool,
    settings: ReliabilitySettings,
    on_retry: Callable[[], None],
) -> Any:
    """Run ``call`` before ``ctx.deadline``, retrying a transient failure where that is safe.

    Raises:
        DeadlineExceeded: the deadline passed while the store was working.
        RequestError: the store's error; a write's transient one carries :data:`IN_DOUBT`.
    """
    try:
        async with asyncio.timeout_at(_loop_deadline(ctx.deadline)):
            try:
                return await call()
            except RequestError as exc:
                # A keyless write that failed transiently may have run (the reply was lost with
                # the connection): only reads and keyed writes are safe to try again.
                if not exc.TRANSIENT or (write and ctx.idempotency_key is None):
                    raise
                return await retry_transient(
                    call,
                    exc,
                    settings=settings,
                    event_id=ctx.event_id,
                    deadline=ctx.deadline,
                    on_retry=on_retry,
                )
    except TimeoutError:
        raise DeadlineExceeded(
            "the request's deadline passed while the store was working"
        ) from None
    except RequestError as exc:
        if exc.TRANSIENT and write:
            raise type(exc)(exc.message, details=(*exc.details, IN_DOUBT)) from exc
        raise


def _loop_deadline(deadline: float | None) -> float | None:
    """Convert a wall-clock deadline into the running loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.time())


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
