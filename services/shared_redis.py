"""Redis behind a circuit breaker: every use of Redis (rate-limit counters, persisted
queries) goes through one SharedRedis per process.

A Redis that is down, or hung, costs one timeout, and then nothing until the backoff has
passed: calls in between fail at once with RedisUnavailable, and each caller falls back as
it documents (per-process windows, per-process documents). The backoff doubles while Redis
keeps failing, up to a ceiling. One log line per change of state, none per call.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

logger = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


class RedisUnavailable(Exception):
    """Redis failed just now, or did shortly before and is not being asked again yet."""


class SharedRedis:
    @classmethod
    def from_url(cls, url: str) -> "SharedRedis":
        # Short timeouts: a hung Redis costs one of them, then the breaker skips it a while.
        return cls(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5))

    def __init__(
        self,
        client: redis.Redis,
        *,
        clock: Callable[[], float] = time.monotonic,
        first_backoff_seconds: float = FIRST_BACKOFF_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.client = client
        self._clock = clock
        self._first_backoff = first_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._backoff = first_backoff_seconds

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped right now."""
        with self._lock:
            return self._open_until is not None and self._clock() < self._open_until

    def run(self, fn: Callable[[redis.Redis], T]) -> T:
        """fn(client), unless Redis failed within the backoff. Raises RedisUnavailable."""
        with self._lock:
            if self._open_until is not None and self._clock() < self._open_until:
                raise RedisUnavailable("Redis failed recently; not asked again yet")
        try:
            result = fn(self.client)
        except redis.RedisError as error:
            self._failed(error)
            raise RedisUnavailable(str(error)) from error
        self._succeeded()
        return result

    def _failed(self, error: redis.RedisError) -> None:
        with self._lock:
            was_closed = self._open_until is None
            if not was_closed:
                self._backoff = min(self._backoff * 2, self._max_backoff)
            self._open_until = self._clock() + self._backoff
            backoff = self._backoff
        if was_closed:
            logger.warning(
                "Redis failed; falling back to this process for %.0f s at a time: %s",
                backoff,
                error,
                extra={"redis_state": "open"},
            )

    def _succeeded(self) -> None:
        with self._lock:
            if self._open_until is None:
                return
            self._open_until = None
            self._backoff = self._first_backoff
        logger.warning("Redis answers again; shared state resumes", extra={"redis_state": "closed"})
