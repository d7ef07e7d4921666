"""The time a request has left, for everything it waits on: database statements, the pool's
ping, the provisioning webhook.

web/ starts a deadline when a request arrives (REQUEST_TIMEOUT_SECONDS from its arrival,
which may be before a worker took it up); whatever waits inside the request waits no longer
than `bounded()` says. Outside a request (the CLI, tests) there is no deadline.
"""

import time
from contextvars import ContextVar, Token

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """The request's time ran out before this step could start."""


def start(seconds: float, *, since: float) -> Token[float | None]:
    """Starts a deadline `seconds` after `since` (time.monotonic()); give the token to end()."""
    return _deadline.set(since + seconds)


def end(token: Token[float | None]) -> None:
    _deadline.reset(token)


def bounded(seconds: float) -> float:
    """`seconds`, or what is left of the deadline when that is less. Raises
    DeadlineExceeded at 0."""
    end = _deadline.get()
    if end is None:
        return seconds
    left = end - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the request ran out of time")
    return left if left < seconds else seconds
