"""The time a request has left, for everything it waits on: database statements, the pool,
the provisioning webhook.

web/ starts a deadline when a request arrives (REQUEST_TIMEOUT_SECONDS from its arrival,
which may be before a worker took it up); whatever waits inside the request asks
`remaining()` and waits no longer. Outside a request (the CLI, tests) there is no deadline.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """The request's time ran out before this step could start."""


def start(seconds: float, *, since: float) -> Token[float | None]:
    """Starts a deadline `seconds` after `since` (time.monotonic()); give the token to end()."""
    return _deadline.set(since + seconds)


def end(token: Token[float | None]) -> None:
    _deadline.reset(token)


@contextmanager
def deadline(seconds: float, *, since: float | None = None) -> Iterator[None]:
    """A deadline `seconds` after `since` (time.monotonic(); default now) for what runs in
    the block."""
    token = _deadline.set((time.monotonic() if since is None else since) + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left, None when there is no deadline. Raises DeadlineExceeded at 0."""
    end = _deadline.get()
    if end is None:
        return None
    left = end - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the request ran out of time")
    return left


def bounded(seconds: float) -> float:
    """`seconds`, or what is left of the deadline when that is less."""
    left = remaining()
    return seconds if left is None else min(seconds, left)
