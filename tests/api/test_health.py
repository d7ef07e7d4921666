from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db.migrations import migrations_head
from db.session import make_engine, make_session_factory
from settings import Settings
from web.health import health_of


def test_livez_needs_nothing(client: FlaskClient) -> None:
    response = client.get("/livez", headers={"Accept": "text/html"})
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_when_migrated(client: FlaskClient) -> None:
    response = client.get("/readyz", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "revision": migrations_head()}


def test_readyz_when_the_database_is_unreachable(
    settings: Settings, unreachable_database: sessionmaker[Session]
) -> None:
    client = create_app(settings, session_factory=unreachable_database).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "reason": "the database is unreachable"}


def test_a_draining_worker_is_not_ready_but_alive(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    app = create_app(replace(settings, shutdown_drain_seconds=3.0), session_factory=session_factory)
    health = health_of(app)
    assert health is not None
    assert health.drain_seconds == 3.0
    health.begin_draining()
    client = app.test_client()
    readyz = client.get("/readyz")
    assert (readyz.status_code, readyz.get_json()) == (
        503,
        {"status": "draining", "reason": "the server is shutting down"},
    )
    livez = client.get("/livez")
    assert (livez.status_code, livez.get_json()) == (200, {"status": "ok"})


def test_readyz_when_migrations_are_missing(settings: Settings, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    client = create_app(settings, session_factory=make_session_factory(engine)).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == (
        f"the database schema is at no revision, the code expects {migrations_head()}; "
        "run `userql migrate`"
    )
    engine.dispose()


def test_an_app_starts_without_its_database_and_says_so(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    configured = replace(
        settings,
        database_url="mysql+pymysql://root@127.0.0.1:1/gone",
        database_wait_seconds=0.5,
    )
    client = create_app(configured).test_client()
    assert "starting without the database; /readyz answers 503" in caplog.text
    assert "database still unreachable at attempt 1" in caplog.text
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 503
