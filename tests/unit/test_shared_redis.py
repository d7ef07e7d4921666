"""The circuit breaker in front of Redis: one failure opens it for a backoff, calls in
between cost nothing, the backoff doubles while Redis keeps failing, one log line per change
of state."""

import logging

import pytest
import redis

from services.shared_redis import RedisUnavailable, SharedRedis


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FlakyClient:
    """Stands in for redis.Redis: `down` decides whether a call fails."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def ping(self) -> bool:
        self.calls += 1
        if self.down:
            raise redis.TimeoutError("Timeout reading from socket")
        return True


def breaker() -> tuple[SharedRedis, FlakyClient, Clock]:
    client, clock = FlakyClient(), Clock()
    shared = SharedRedis(
        client,  # type: ignore[arg-type]
        clock=clock,
        first_backoff_seconds=1.0,
        max_backoff_seconds=4.0,
    )
    return shared, client, clock


def ping(shared: SharedRedis) -> bool:
    return shared.run(lambda client: client.ping())


def test_a_failure_skips_redis_until_the_backoff_has_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared, client, clock = breaker()
    assert ping(shared) is True
    client.down = True
    with caplog.at_level(logging.WARNING, logger="services.shared_redis"):
        for _ in range(50):
            with pytest.raises(RedisUnavailable):
                ping(shared)
    assert client.calls == 2  # one success, one failure; the other 49 never reached Redis
    assert shared.is_open
    assert [record.getMessage()[:29] for record in caplog.records] == [
        "Redis failed; falling back to"
    ]
    clock.now += 1.0
    assert not shared.is_open


def test_the_backoff_doubles_while_redis_keeps_failing_and_resets_when_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared, client, clock = breaker()
    client.down = True
    opened_for = []
    with caplog.at_level(logging.WARNING, logger="services.shared_redis"):
        for _ in range(5):
            with pytest.raises(RedisUnavailable):
                ping(shared)
            started = clock.now
            while shared.is_open:
                clock.now += 0.25
            opened_for.append(clock.now - started)
        client.down = False
        assert ping(shared) is True
        client.down = True
        with pytest.raises(RedisUnavailable):
            ping(shared)
    assert opened_for == [1.0, 2.0, 4.0, 4.0, 4.0]
    clock.now += 1.0
    assert not shared.is_open  # back to the first backoff after a success
    # Open, closed, open: one line each, whatever the number of calls.
    assert [getattr(r, "redis_state", None) for r in caplog.records] == ["open", "closed", "open"]
