from pathlib import Path

import pytest

from app import ConfigError, Environment, Settings, build_provisioner
from db.session import default_database_url
from services.provisioning import NoopProvisioner, WebhookProvisioner


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({}, dotenv_path=tmp_path / "missing.env")
    assert settings == Settings(
        database_url=default_database_url(),
        environment=Environment.DEVELOPMENT,
        provisioning_webhook_url=None,
        provisioning_timeout_seconds=3.0,
        log_level="INFO",
    )
    assert settings.database_url.endswith("/instance/userql.sqlite3")
    assert isinstance(build_provisioner(settings), NoopProvisioner)


def test_every_setting_is_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "mysql+pymysql://u@db/userql",
            "USERQL_ENV": "Production",
            "USER_PROVISIONING_WEBHOOK_URL": "https://hooks.example/users",
            "USER_PROVISIONING_TIMEOUT_SECONDS": "1.5",
            "LOG_LEVEL": "debug",
        },
        dotenv_path=tmp_path / "missing.env",
    )
    assert settings.database_url == "mysql+pymysql://u@db/userql"
    assert settings.environment is Environment.PRODUCTION
    assert settings.provisioning_timeout_seconds == 1.5
    assert settings.log_level == "DEBUG"
    assert isinstance(build_provisioner(settings), WebhookProvisioner)


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE_URL=sqlite:///from-file.db\nUSERQL_ENV=test\n")
    settings = Settings.from_env({"USERQL_ENV": "production"}, dotenv_path=dotenv)
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.environment is Environment.PRODUCTION


def test_the_dotenv_file_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=WARNING\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).log_level == "WARNING"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("USERQL_ENV", "staging", "USERQL_ENV must be one of development, production, test"),
        ("USER_PROVISIONING_TIMEOUT_SECONDS", "soon", "must be a number of seconds"),
        ("USER_PROVISIONING_TIMEOUT_SECONDS", "0", "more than 0 and at most 60"),
        ("USER_PROVISIONING_TIMEOUT_SECONDS", "600", "more than 0 and at most 60"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be"),
    ],
)
def test_bad_values_are_refused_at_startup(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({variable: value}, dotenv_path=tmp_path / "missing.env")


def test_a_webhook_url_that_is_not_http_is_refused(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"USER_PROVISIONING_WEBHOOK_URL": "file:///etc/passwd"}, dotenv_path=tmp_path / "x"
    )
    with pytest.raises(ConfigError, match="USER_PROVISIONING_WEBHOOK_URL"):
        build_provisioner(settings)
