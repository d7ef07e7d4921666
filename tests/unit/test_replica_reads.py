"""ReplicaReads: where a process's reads go, decided once per interval from the replica's
lag, and one log line per change of mind."""

import threading

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from db.replica import ReplicaReads

LOGGER = "db.replica"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Lag:
    """The replica's answers, in turn; an exception is raised as the check would."""

    def __init__(self, *answers: float | Exception | None) -> None:
        self.answers = list(answers)
        self.asked = 0

    def __call__(self) -> float | None:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


ENGINE = create_engine("sqlite://")
DOWN = OperationalError("SHOW REPLICA STATUS", {}, Exception("(2003) connection refused"))


def reads(lag: Lag, clock: Clock, max_lag: float = 5.0) -> ReplicaReads:
    return ReplicaReads(ENGINE, lag=lag, max_lag_seconds=max_lag, interval_seconds=1.0, clock=clock)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_the_replica_is_asked_once_per_interval_however_many_requests_read() -> None:
    lag, clock = Lag(0.0), Clock()
    replica = reads(lag, clock)
    assert all(replica.engine() is ENGINE for _ in range(50))
    assert lag.asked == 1
    clock.now = 0.99
    replica.engine()
    assert lag.asked == 1
    clock.now = 1.0
    replica.engine()
    assert lag.asked == 2


@pytest.mark.parametrize(
    ("answer", "trouble"),
    [
        (5.5, "5.5 s behind the primary, more than DB_REPLICA_MAX_LAG_SECONDS (5)"),
        (None, "not replicating (SHOW REPLICA STATUS: none, or a thread stopped)"),
        (DOWN, "not answering SHOW REPLICA STATUS ((2003) connection refused)"),
    ],
)
def test_a_replica_that_lags_stops_or_is_down_sends_reads_to_the_primary_until_it_is_well(
    answer: float | Exception | None, trouble: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=LOGGER)
    clock = Clock()
    replica = reads(Lag(answer, answer, answer, 5.0, 0.0), clock)
    for second in range(5):
        clock.now = float(second)
        expected = None if second < 3 else ENGINE
        assert [replica.engine() for _ in range(3)] == [expected] * 3
    assert messages(caplog) == [
        f"reads go to the primary: the replica is {trouble}",
        "reads go to the replica again: it replicates within the lag limit",
    ]


def test_exactly_the_limit_is_within_it() -> None:
    assert reads(Lag(5.0), Clock()).engine() is ENGINE


def test_a_failed_connection_sends_reads_to_the_primary_until_the_next_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger=LOGGER)
    lag, clock = Lag(0.0), Clock()
    replica = reads(lag, clock)
    assert replica.engine() is ENGINE
    clock.now = 0.5
    replica.failed(DOWN)
    replica.failed(DOWN)  # another request's, at the same moment: no second line
    clock.now = 1.2
    assert replica.engine() is None  # the next check is an interval after the failure
    clock.now = 1.5
    assert replica.engine() is ENGINE
    assert lag.asked == 2
    assert messages(caplog) == [
        "reads go to the primary: the replica is unreachable ((2003) connection refused)",
        "reads go to the replica again: it replicates within the lag limit",
    ]


def test_requests_during_a_slow_check_take_the_last_answer_at_once() -> None:
    started, release = threading.Event(), threading.Event()
    clock = Clock()

    def slow() -> float:
        started.set()
        release.wait(5)
        return 60.0

    replica = ReplicaReads(ENGINE, lag=slow, max_lag_seconds=5, clock=clock)
    checking = threading.Thread(target=replica.engine)
    checking.start()
    assert started.wait(5)
    assert replica.engine() is ENGINE  # not waiting for the check under way
    release.set()
    checking.join(5)
    assert replica.engine() is None
