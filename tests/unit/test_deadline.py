"""db.deadline: what a step inside a request may wait."""

import time

import pytest

from db import deadline


def test_without_a_deadline_a_step_waits_its_own_timeout() -> None:
    assert deadline.bounded(30.0) == 30.0


def test_a_step_waits_no_longer_than_the_request_has_left() -> None:
    token = deadline.start(2.0, since=time.monotonic())
    try:
        assert 1.5 < deadline.bounded(30.0) <= 2.0
        assert deadline.bounded(0.5) == 0.5
    finally:
        deadline.end(token)
    assert deadline.bounded(30.0) == 30.0


def test_a_step_after_the_deadline_does_not_start() -> None:
    token = deadline.start(1.0, since=time.monotonic() - 5)
    try:
        with pytest.raises(deadline.DeadlineExceeded, match="ran out of time"):
            deadline.bounded(30.0)
    finally:
        deadline.end(token)
