from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.auth import transport

from services.google import DEFAULT_CERTS_MAX_AGE_SECONDS, CachingRequest


@dataclass
class FakeResponse(transport.Response):
    code: int
    head: Mapping[str, str]
    body: bytes

    @property
    def status(self) -> int:
        return self.code

    @property
    def headers(self) -> Mapping[str, str]:
        return self.head

    @property
    def data(self) -> bytes:
        return self.body


@dataclass
class FakeTransport(transport.Request):
    responses: list[FakeResponse]
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> FakeResponse:
        self.calls.append((method, url))
        return self.responses.pop(0)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_get_is_kept_for_max_age() -> None:
    inner = FakeTransport(
        [
            FakeResponse(200, {"cache-control": "public, max-age=60"}, b"1"),
            FakeResponse(200, {}, b"2"),
        ]
    )
    clock = Clock()
    request = CachingRequest(inner, clock)
    assert request("https://certs").data == b"1"
    clock.now += 59
    assert request("https://certs").data == b"1"
    clock.now += 2
    assert request("https://certs").data == b"2"
    clock.now += DEFAULT_CERTS_MAX_AGE_SECONDS - 1
    assert request("https://certs").data == b"2"
    assert len(inner.calls) == 2


def test_failures_and_other_methods_are_not_kept() -> None:
    inner = FakeTransport(
        [
            FakeResponse(503, {}, b"down"),
            FakeResponse(200, {}, b"up"),
            FakeResponse(201, {}, b"posted"),
        ]
    )
    request = CachingRequest(inner, Clock())
    assert request("https://certs").status == 503
    assert request("https://certs").data == b"up"
    assert request("https://certs", method="POST", body=b"x").data == b"posted"
    assert inner.calls == [
        ("GET", "https://certs"),
        ("GET", "https://certs"),
        ("POST", "https://certs"),
    ]
