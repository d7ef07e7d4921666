"""What bounds a request's database work besides the socket timeouts: the wait for a pooled
connection (what is left of the request, not DB_POOL_TIMEOUT_SECONDS), and the server's own
cap on a statement (REQUEST_TIMEOUT_SECONDS, for the server process's engines)."""

import time
from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from db import deadline
from db.session import PoolOptions, connect, make_engine

pytestmark = pytest.mark.mysql


def test_the_wait_for_a_pooled_connection_ends_with_the_request(mysql_url: str) -> None:
    engine = make_engine(mysql_url, PoolOptions(size=1, max_overflow=0, timeout_seconds=5))
    held = engine.connect()
    try:
        token = deadline.start(0.5, since=time.monotonic())
        started = time.monotonic()
        try:
            # The pool gives up when the request's time is up, which the request is told as
            # the deadline it ran out of (RequestTimedOut, REQUEST_TIMEOUT, in a service).
            with pytest.raises(deadline.DeadlineExceeded):
                engine.connect()
        finally:
            deadline.end(token)
        waited = time.monotonic() - started
    finally:
        held.close()
        engine.dispose()
    assert waited < 1.5, waited  # not the pool's 5 s


def test_the_server_stops_a_statement_at_the_request_budget(mysql_url: str) -> None:
    writes, _reads, _readiness = connect(
        mysql_url, replace(PoolOptions(), read_timeout_seconds=30), 1, request_timeout_seconds=1
    )
    session = writes()
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match=r"max_statement_time|maximum statement"):
            # MariaDB's cap interrupts SLEEP without an error: a query that reads rows for
            # longer than the cap is what it stops with one.
            session.execute(
                text(
                    "SELECT COUNT(*) FROM information_schema.columns a, "
                    "information_schema.columns b, information_schema.columns c"
                )
            ).scalar()
    finally:
        session.close()
        writes.kw["bind"].dispose()
    assert time.monotonic() - started < 5
