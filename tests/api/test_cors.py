from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from settings import ConfigError, Settings

ALLOWED = "https://app.example"
PREFLIGHT = {
    "Origin": ALLOWED,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def cors_client(
    settings: Settings, session_factory: sessionmaker[Session], **options: object
) -> FlaskClient:
    configured = replace(settings, cors_origins=(ALLOWED,), **options)  # type: ignore[arg-type]
    return create_app(configured, session_factory=session_factory).test_client()


def test_an_allowed_origin_may_read_the_answer(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    client = cors_client(settings, session_factory)
    response = client.post("/graphql", json={"query": "{ me { id } }"}, headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_another_origin_gets_no_cors_headers(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    client = cors_client(settings, session_factory)
    headers = {"Origin": "https://evil.example"}
    response = client.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options("/graphql", headers={**PREFLIGHT, **headers})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_a_preflight_is_answered(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    response = cors_client(settings, session_factory).options("/graphql", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {
        "GET",
        "POST",
        "OPTIONS",
    }
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers
    assert response.headers["Access-Control-Max-Age"] == "600"


def test_credentials_only_when_configured(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    client = cors_client(settings, session_factory, cors_allow_credentials=True)
    response = client.options("/graphql", headers=PREFLIGHT)
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def test_no_origins_means_no_cross_origin_access(client: FlaskClient) -> None:
    response = client.options("/graphql", headers=PREFLIGHT)
    assert "Access-Control-Allow-Origin" not in response.headers
    simple = client.post("/graphql", json={"query": "{ me { id } }"}, headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in simple.headers


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CORS_ORIGINS": "app.example"}, "is not an origin like https://app.example"),
        (
            {"CORS_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "true"},
            "CORS_ORIGINS=\\* cannot be combined with CORS_ALLOW_CREDENTIALS=true",
        ),
    ],
)
def test_unsafe_cors_settings_are_refused(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"JWT_SECRET": "x" * 32, **environ}, dotenv_path=tmp_path / "x")


def test_origins_are_read_and_normalized(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"JWT_SECRET": "x" * 32, "CORS_ORIGINS": "https://a.example/, http://localhost:5173"},
        dotenv_path=tmp_path / "x",
    )
    assert settings.cors_origins == ("https://a.example", "http://localhost:5173")
