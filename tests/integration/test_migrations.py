"""The one place that runs DDL: migrations against a database of their own on SQLite, and
against the test database on MySQL, which every other test leaves empty and at head."""

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, String, inspect

from db.base import Base
from db.migrations import alembic_config
from db.session import make_engine


@pytest.fixture
def migration_url(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
    return database_url


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(migration_url: str) -> None:
    config = alembic_config(migration_url)
    command.upgrade(config, "head")
    assert {"users", "alembic_version"} <= _tables(migration_url)
    command.downgrade(config, "base")
    assert "users" not in _tables(migration_url)
    command.upgrade(config, "head")
    assert "users" in _tables(migration_url)


def test_the_models_match_the_migrations(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_comparison_notices_a_model_change(engine: Engine) -> None:
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["users"].append_column(Column("nickname", String(40)))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, changed)
    assert [op[0] for op in diff] == ["add_column"]
