"""The loop every long-running worker shares: PostgreSQL and NATS come and go, so a worker that
fails is started again, with a growing pause, until it is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def serve_forever(
    serve: Callable[[], Awaitable[None]],
    name: str,
    *,
    first_pause: float = 0.05,
    longest_pause: float = 2.0,
    **context: Any,
) -> None:
    """Run `serve` again after every failure (logged as `<name>_retrying`), pausing twice as
    long each time up to `longest_pause`; only cancellation ends it."""
    pause = first_pause
    while True:
        try:
            await serve()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{name}_retrying", error=repr(exc), in_seconds=pause, **context)
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest_pause)


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a worker's task and wait until it has finished its cleanup."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
