"""ReadinessProbe: one check per period however many probes ask, and no probe waits for
another's check."""

import threading

from services.health import Readiness, ReadinessProbe


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_probes_within_the_period_share_one_check() -> None:
    checks: list[int] = []
    clock = Clock()

    def check() -> Readiness:
        checks.append(1)
        return Readiness(ready=True)

    probe = ReadinessProbe(check, max_age_seconds=1.0, clock=clock)
    assert all(probe.current().ready for _ in range(20))
    assert len(checks) == 1
    clock.now = 1.0
    assert probe.current().ready
    assert len(checks) == 2


def test_a_probe_during_a_slow_check_gets_the_last_answer_at_once() -> None:
    started, release = threading.Event(), threading.Event()
    answers = iter([Readiness(ready=True), Readiness(ready=False, reason="slow")])
    clock = Clock()

    def check() -> Readiness:
        answer = next(answers)
        if not answer.ready:
            started.set()
            release.wait(5)
        return answer

    probe = ReadinessProbe(check, max_age_seconds=1.0, clock=clock)
    assert probe.current() == Readiness(ready=True)
    clock.now = 2.0  # stale: the next probe checks again, and that check hangs
    slow = threading.Thread(target=probe.current)
    slow.start()
    assert started.wait(5)
    assert probe.current() == Readiness(ready=True)  # not waiting for the hung check
    release.set()
    slow.join(5)
    assert probe.current() == Readiness(ready=False, reason="slow")


def test_before_any_check_has_finished_the_answer_is_not_ready() -> None:
    started, release = threading.Event(), threading.Event()

    def check() -> Readiness:
        started.set()
        release.wait(5)
        return Readiness(ready=True)

    probe = ReadinessProbe(check)
    first = threading.Thread(target=probe.current)
    first.start()
    assert started.wait(5)
    assert probe.current() == Readiness(ready=False, reason="the first check is under way")
    release.set()
    first.join(5)
