"""The columns deactivation and sign-out everywhere need are added to a large MariaDB table
without rebuilding it: InnoDB keeps the table (its id) and only its metadata changes."""

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from db.migrations import alembic_config
from tests.report import REPORT

pytestmark = pytest.mark.mysql
ROWS = 100_000
BEFORE, AFTER = "d38d528398ba", "5b1e0c7a9d21"
DATABASE = "userql_instant_test"


@pytest.fixture
def big_table(mysql_url: str) -> Iterator[tuple[str, Engine]]:
    server = create_engine(make_url(mysql_url).set(database=""))
    with server.begin() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        connection.execute(text(f"CREATE DATABASE {DATABASE}"))
    url = make_url(mysql_url).set(database=DATABASE).render_as_string(hide_password=False)
    command.upgrade(alembic_config(url), BEFORE)
    engine = create_engine(url)
    with engine.begin() as connection:
        # MariaDB's SEQUENCE engine: ROWS rows in one statement.
        connection.execute(
            text(
                "INSERT INTO users (name, email, role, created_at, updated_at) "
                "SELECT CONCAT('User ', seq), CONCAT('user', seq, '@instant.test'), 'USER', "
                "NOW(6), NOW(6) FROM seq_1_to_100000"
            )
        )
    try:
        yield url, engine
    finally:
        engine.dispose()
        with server.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        server.dispose()


def _table_id(engine: Engine) -> int:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT TABLE_ID FROM information_schema.INNODB_SYS_TABLES WHERE NAME = :name"),
            {"name": f"{DATABASE}/users"},
        ).scalar_one()
    return int(found)


def test_the_columns_are_added_without_a_rebuild(big_table: tuple[str, Engine]) -> None:
    url, engine = big_table
    before = _table_id(engine)
    command.upgrade(alembic_config(url), AFTER)
    assert _table_id(engine) == before
    with engine.connect() as connection:
        count = connection.execute(
            text("SELECT COUNT(*) FROM users WHERE deactivated_at IS NULL")
        ).scalar_one()
    assert count == ROWS
    # The control: a rebuild gives the table a new id, so the check above can fail.
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE users FORCE"))
    assert _table_id(engine) != before
    REPORT.append(f"instant columns: {ROWS} rows, table id kept ({before}); a rebuild changes it")
