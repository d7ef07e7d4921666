"""alembic's configuration for this source tree: the migrations live beside the packages, in
alembic/, wherever the tree is (a checkout, or /srv/userql in the image)."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

SOURCE_ROOT = Path(__file__).resolve().parent.parent


class MigrationsNotFound(Exception):
    """The source tree has no alembic/ migrations beside its packages."""


def alembic_config(database_url: str) -> Config:
    if not (SOURCE_ROOT / "alembic" / "env.py").is_file():
        raise MigrationsNotFound(f"no alembic migrations in {SOURCE_ROOT / 'alembic'}")
    config = Config(str(SOURCE_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(SOURCE_ROOT / "alembic"))
    # Passed as an attribute, not an ini option: configparser would mangle a '%' in a password.
    config.attributes["database_url"] = database_url
    # The caller's logging stays in place; alembic's ini would replace it.
    config.attributes["configure_logger"] = False
    return config


def migrations_head() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise MigrationsNotFound(f"no alembic revisions in {SOURCE_ROOT / 'alembic' / 'versions'}")
    return head


def upgrade(database_url: str) -> str:
    """Upgrades the database to the newest revision; returns that revision."""
    command.upgrade(alembic_config(database_url), "head")
    return migrations_head()
