"""The Docker image, built and run as an operator would: podman builds the Dockerfile (on a
stand-in base image, see tests/deploy/podman.py), migrates MariaDB from the image, serves
from it, passes its own HEALTHCHECK and drains an in-flight request on SIGTERM."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.session import make_engine
from tests.conftest import TEST_SECRET
from tests.deploy import podman
from tests.graphql import CREATE_USER
from tests.http_stub import Behaviour, stub_server
from tests.report import REPORT
from tests.servers import call, free_port

pytestmark = [pytest.mark.image, pytest.mark.mysql]
TAG = "localhost/userql:test"
# What the image may hold besides the base: the runtime dependencies and the source tree.
MAX_ADDED_BYTES = 120 * 1024 * 1024
DEVELOPMENT_TOOLS = ("mypy", "ruff", "pytest", "hadolint", "compose", "coverage", "hypothesis")


@pytest.fixture(scope="module")
def image() -> str:
    podman.ensure_base_image()
    seconds = podman.build(TAG)
    size = int(str(podman.inspect(TAG)["Size"]))
    base = int(str(podman.inspect(podman.BASE_IMAGE)["Size"]))
    added = (size - base) / 1e6
    REPORT.append(
        f"image {TAG}: {size / 1e6:.1f} MB, {added:.1f} MB over the stand-in base, "
        f"built in {seconds:.1f} s"
    )
    return TAG


@pytest.fixture(scope="module")
def image_database(mysql_url: str) -> Iterator[str]:
    """A database of its own on the MariaDB the suite uses, dropped afterwards."""
    name = f"userql_image_{uuid.uuid4().hex[:8]}"
    admin = make_engine(mysql_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield make_url(mysql_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def test_the_image_is_lean(image: str) -> None:
    added = int(str(podman.inspect(image)["Size"])) - int(
        str(podman.inspect(podman.BASE_IMAGE)["Size"])
    )
    assert added < MAX_ADDED_BYTES
    probe = (
        "import importlib.util, json, os; "
        f"tools = [m for m in {list(DEVELOPMENT_TOOLS)!r} if importlib.util.find_spec(m)]; "
        "print(json.dumps([tools, os.path.exists('/wheels'), sorted(os.listdir('/srv/userql'))]))"
    )
    found = podman.run(image, "python", "-c", probe)
    assert found.returncode == 0, found.stderr
    tools, wheels_left, tree = json.loads(found.stdout)
    assert (tools, wheels_left) == ([], False)
    assert "tests" not in tree
    assert {"app.py", "alembic", "alembic.ini", "cli", "db", "gunicorn.conf.py"} <= set(tree)
    # A HEALTHCHECK survives only in the docker format.
    healthcheck: Any = podman.inspect(image)["Healthcheck"]
    assert healthcheck["Test"] == ["CMD", "userql", "healthcheck"]


def test_migrate_serve_health_and_drain(image: str, image_database: str) -> None:
    migrate = podman.run(
        image,
        "userql",
        "migrate",
        env=[f"DATABASE_URL={image_database}", f"JWT_SECRET={TEST_SECRET}"],
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "database migrated to" in migrate.stdout

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    webhook = Behaviour(delay_seconds=3.0)
    with (
        stub_server(webhook) as webhook_url,
        podman.container(
            image,
            f"--env=DATABASE_URL={image_database}",
            f"--env=JWT_SECRET={TEST_SECRET}",
            # BIND, not PORT: the HEALTHCHECK must ask where gunicorn really listens.
            f"--env=BIND=127.0.0.1:{port}",
            f"--env=HEALTH_PORT={free_port()}",
            "--env=WEB_CONCURRENCY=2",
            f"--env=USER_PROVISIONING_WEBHOOK_URL={webhook_url}",
            "--env=USER_PROVISIONING_TIMEOUT_SECONDS=10",
            name=f"userql-test-{port}",
        ) as name,
    ):
        wait_for(f"{base}/readyz", name)
        assert call(f"{base}/livez") == (200, {"status": "ok"})

        health = podman.podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr

        admin = podman.podman(
            "exec", name, "userql", "create-admin", "--email", "ops@example.com", "--name", "Ops"
        )
        assert "is now an ADMIN" in admin.stdout
        token = podman.podman(
            "exec", name, "userql", "issue-token", "--email", "ops@example.com"
        ).stdout.strip()
        status, body = call(f"{base}/graphql", {"query": "{ me { email role } }"}, token=token)
        assert (status, body) == (
            200,
            {"data": {"me": {"email": "ops@example.com", "role": "ADMIN"}}},
        )

        # Not root, and the application's files are not its to change.
        assert podman.podman("exec", name, "id", "-u").stdout.strip() == "10001"
        write = podman.podman(
            "exec", name, "python", "-c", "open('/srv/userql/app.py', 'a')", check=False
        )
        assert write.returncode != 0
        assert "Permission denied" in write.stderr

        # SIGTERM while a createUser waits on the webhook: it finishes, then the server exits.
        answers: list[tuple[int, Any]] = []
        variables = {"input": {"name": "Late Leaver", "email": "late@example.com"}}
        request = threading.Thread(
            target=lambda: answers.append(
                call(f"{base}/graphql", {"query": CREATE_USER, "variables": variables}, token=token)
            )
        )
        request.start()
        deadline = time.monotonic() + 10
        while not webhook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert webhook.received, "the request never reached the webhook"
        stopped = podman.podman("stop", "--time", "20", name, check=False)
        request.join(timeout=30)
        assert stopped.returncode == 0, stopped.stderr
        [(status, body)] = answers
        assert status == 200
        assert body["data"]["createUser"]["__typename"] == "CreateUserSuccess", body
        logs = podman.podman("logs", name).stdout + podman.podman("logs", name).stderr
        assert "Control server error" not in logs
        exit_code = podman.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout
        assert exit_code.strip() == "0", logs


def wait_for(url: str, name: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if call(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    logs = podman.podman("logs", name, check=False)
    raise AssertionError(f"{url} never answered 200:\n{logs.stdout}\n{logs.stderr}")
