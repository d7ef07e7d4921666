"""Fixed-window rate limits, shared through Redis when there is one.

A Redis outage fails open to a per-process window, so the API keeps serving with weaker,
per-worker limits rather than going down with Redis; services.shared_redis decides when
Redis is asked and logs its changes of state.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from services.errors import ServiceError
from services.shared_redis import RedisUnavailable, SharedRedis


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """'10/60' is 10 per 60 seconds."""
        count, _, seconds = text.partition("/")
        if not (count.strip().isdigit() and seconds.strip().isdigit()):
            raise ValueError(f"a rate looks like 10/60, not {text!r}")
        rate = cls(int(count), int(seconds))
        if rate.limit < 1 or rate.window_seconds < 1:
            raise ValueError(f"a rate needs a count and a window of at least 1, not {text!r}")
        return rate


class RateLimited(ServiceError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"Too many attempts; try again in {retry_after_seconds} seconds.")
        self.retry_after_seconds = retry_after_seconds
        self.extensions = {"retryAfter": retry_after_seconds}


class Counter(Protocol):
    def hit(self, key: str, window_seconds: int, now: float) -> int:
        """Counts one hit in the window that holds `now`; returns the hits so far."""
        ...


class MemoryCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, window_seconds: int, now: float) -> int:
        window_end = _window_end(now, window_seconds)
        with self._lock:
            ends, hits = self._hits.get(key, (window_end, 0))
            hits = hits + 1 if ends == window_end else 1
            self._hits[key] = (window_end, hits)
            if len(self._hits) > 100_000:  # bound memory under a flood of distinct keys
                self._hits = {k: v for k, v in self._hits.items() if v[0] > now}
            return hits


class RedisCounter:
    """Raises RedisUnavailable when Redis cannot count."""

    def __init__(self, shared: SharedRedis, prefix: str = "userql:ratelimit") -> None:
        self._shared = shared
        self._prefix = prefix

    def hit(self, key: str, window_seconds: int, now: float) -> int:
        window_end = _window_end(now, window_seconds)
        redis_key = f"{self._prefix}:{key}:{int(window_end)}"

        def count(client: redis.Redis) -> int:
            pipeline = client.pipeline()
            pipeline.incr(redis_key)
            pipeline.expireat(redis_key, int(window_end) + 1)
            hits, _ = pipeline.execute()
            return int(hits)

        return self._shared.run(count)


def _window_end(now: float, window_seconds: int) -> float:
    return (math.floor(now / window_seconds) + 1) * window_seconds


class RateLimiter:
    def __init__(
        self,
        rates: dict[str, Rate],
        *,
        shared: Counter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rates = rates
        self._shared = shared
        self._local = MemoryCounter()
        self._clock = clock

    def check(self, bucket: str, *identities: str) -> None:
        """Counts one attempt at `bucket` for each identity. Raises RateLimited when any of
        them is over its rate; the attempt still counts."""
        rate = self._rates.get(bucket)
        if rate is None:
            return
        now = self._clock()
        for identity in identities:
            if self._count(f"{bucket}:{identity}", rate, now) > rate.limit:
                raise RateLimited(max(1, math.ceil(_window_end(now, rate.window_seconds) - now)))

    def _count(self, key: str, rate: Rate, now: float) -> int:
        if self._shared is not None:
            try:
                return self._shared.hit(key, rate.window_seconds, now)
            except RedisUnavailable:
                pass  # counted in this process instead, as documented
        return self._local.hit(key, rate.window_seconds, now)
