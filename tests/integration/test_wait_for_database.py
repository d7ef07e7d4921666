import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cli import main
from db.session import make_engine, wait_for_database


def test_a_reachable_database_answers_at_once(engine: Engine) -> None:
    assert wait_for_database(engine, seconds=1) is True


def test_an_unreachable_database_is_retried_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine("mysql+pymysql://root@127.0.0.1:1/gone")
    with caplog.at_level(logging.INFO, logger="db.session"):
        assert wait_for_database(engine, seconds=0.35, interval=0.1) is False
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("database not reachable yet (attempt 1)")
    assert messages[-1].startswith("database still unreachable at attempt ")
    assert len(messages) >= 3
    engine.dispose()


def test_migrate_refuses_to_run_without_a_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "mysql+pymysql://root@127.0.0.1:1/gone")
    monkeypatch.setenv("DB_WAIT_SECONDS", "0.2")
    monkeypatch.setenv("USERQL_ENV", "test")
    monkeypatch.setenv("JWT_SECRET", "x" * 32)
    assert main(["migrate"]) == 1
