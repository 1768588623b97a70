"""``trio_test``: run an ``async def`` test under ``trio.run`` (pytest-trio is not a dependency)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import trio


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function under trio.run."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs))

    return wrapper
