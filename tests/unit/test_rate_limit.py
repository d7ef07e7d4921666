import pytest

from services.rate_limit import MemoryCounter, Rate, RateLimited, RateLimiter


class Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_parses() -> None:
    assert Rate.parse("10/60") == Rate(10, 60)
    for text in ("0/60", "10/0", "ten/60", "10", "-1/60"):
        with pytest.raises(ValueError, match="a rate"):
            Rate.parse(text)


def test_the_limit_holds_then_resets_with_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter({"sign_in": Rate(2, 60)}, clock=clock)
    limiter.check("sign_in", "address:1")
    limiter.check("sign_in", "address:1")
    with pytest.raises(RateLimited) as refused:
        limiter.check("sign_in", "address:1")
    # The window [960, 1020) ends 20 seconds from now.
    assert refused.value.retry_after_seconds == 20
    assert refused.value.extensions == {"retryAfter": 20}
    limiter.check("sign_in", "address:2")  # someone else
    clock.now = 1_020.0
    limiter.check("sign_in", "address:1")


def test_every_identity_counts() -> None:
    limiter = RateLimiter({"create_user": Rate(1, 60)}, clock=Clock())
    limiter.check("create_user", "address:1", "user:7")
    # A new address does not help the same user.
    with pytest.raises(RateLimited):
        limiter.check("create_user", "address:2", "user:7")


def test_unlisted_buckets_are_unlimited() -> None:
    limiter = RateLimiter({}, clock=Clock())
    for _ in range(100):
        limiter.check("anything", "address:1")


def test_memory_stays_bounded() -> None:
    counter = MemoryCounter()
    for i in range(100_010):
        counter.hit(f"k{i}", 1, now=float(i // 50_000) * 10)
    assert len(counter._hits) <= 100_001
