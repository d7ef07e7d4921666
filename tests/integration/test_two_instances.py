"""Two gunicorn instances of userql behind the compose file's proxy (Debian's nginx with
deploy/nginx/default.conf.template, as tests/deploy/test_proxy.py runs it), sharing MariaDB
and Redis, all on the loopback.

One upstream name with two addresses, as `docker compose up --scale api=2` gives nginx: a
DNS responder of the test's own (a thread, UDP on 127.0.0.1) answers the name with
127.0.0.2 and 127.0.0.3, and one instance listens on each, on the same port.

- A rate limit is counted across both instances.
- A persisted query registered through one instance is served by the other.
- A slow-header client at the proxy never reaches gunicorn.
- A SIGTERM to one instance during a bounded load loses no request (nginx retries the
  ones the stopping instance refused on the other), and the other keeps serving.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
from sqlalchemy import delete

from db import models
from db.session import make_engine
from tests.conftest import MYSQL_URL_VARIABLE, REDIS_URL_VARIABLE, TEST_SECRET
from tests.deploy import test_proxy
from tests.graphql import CREATE_USER
from tests.report import REPORT
from tests.servers import call, free_port, start_gunicorn, stop, userql, wait_until_ready

pytestmark = [pytest.mark.mysql, pytest.mark.redis, pytest.mark.proxy]

UPSTREAM_NAME = "userql-api.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
ME = "{ me { id } }"
# GET needs this header (the app's CSRF guard); nginx retries a GET after an upstream error.
GET_HEADERS = {"GraphQL-Require-Preflight": "1"}
LOAD_THREADS = 8
LOAD_SECONDS = 4.0
LOAD_PER_THREAD = 400
SIGTERM_AFTER = 1.0
# nginx's words, in its error log, for an upstream error it may pass to the next server.
UPSTREAM_ERRORS = ("while connecting to upstream", "while reading response header from upstream")


# --- a DNS responder for one name --------------------------------------------------------------


class Resolver:
    """Answers A queries for `name` with `addresses` (TTL 1), NXDOMAIN for any other name,
    an empty answer for other types of `name`; UDP on 127.0.0.1, in a thread."""

    def __init__(self, name: str, addresses: tuple[str, ...]) -> None:
        self.name = name.lower()
        self.addresses = addresses
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port: int = self.socket.getsockname()[1]
        self.queries = 0
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                query, client = self.socket.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if (answer := self.answer(query)) is not None:
                self.queries += 1
                self.socket.sendto(answer, client)

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        ident, flags, questions = struct.unpack("!HHH", query[:6])
        if questions != 1:
            return None
        labels, offset = [], 12
        while offset < len(query) and (length := query[offset]):
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
        offset += 1
        if offset + 4 > len(query):
            return None
        qtype, _qclass = struct.unpack("!HH", query[offset : offset + 4])
        question = query[12 : offset + 4]
        name = ".".join(labels).lower()
        # QR, AA, the client's RD, RA.
        response_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080
        records = b""
        count = 0
        if name != self.name:
            response_flags |= 3  # NXDOMAIN
        elif qtype == 1:
            for address in self.addresses:
                # A pointer to the question's name, A, IN, TTL 1, 4 bytes.
                records += struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(address)
                count += 1
        header = struct.pack("!HHHHHH", ident, response_flags, 1, count, 0, 0)
        return header + question + records

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.socket.close()


@contextmanager
def nginx_with_resolver(upstream: str, resolvers: str) -> Iterator[test_proxy.Nginx]:
    """tests/deploy/test_proxy.py's nginx(), which renders the template with the compose
    file's environment and NGINX_LOCAL_RESOLVERS=127.0.0.1, but rendered with `resolvers`
    instead: its render() is replaced only while nginx() writes the configuration."""
    real_render = test_proxy.render

    def render(template: str, environ: Any) -> str:
        return real_render(template, {**environ, "NGINX_LOCAL_RESOLVERS": resolvers})

    with ExitStack() as stack:
        with mock.patch.object(test_proxy, "render", render):
            started = stack.enter_context(test_proxy.nginx(upstream))
        config = (started.log.parent / "default.conf").read_text()
        assert f"resolver {resolvers} valid=10s" in config, config
        yield started


# --- the two instances -------------------------------------------------------------------------


@dataclass
class Instance:
    name: str
    base: str
    log: Path
    process: "subprocess.Popen[bytes]"


@dataclass
class Cluster:
    instances: dict[str, Instance]
    proxy: test_proxy.Nginx
    token: str
    resolver: Resolver


def shared_port() -> int:
    """A port free on both loopback addresses."""
    for _ in range(50):
        port = free_port()
        try:
            for address in ADDRESSES:
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on both addresses")


def clean(mysql_url: str, redis_url: str) -> None:
    engine = make_engine(mysql_url)
    with engine.begin() as connection:
        connection.execute(delete(models.User))
    engine.dispose()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    mysql_url = os.environ[MYSQL_URL_VARIABLE]
    redis_url = os.environ[REDIS_URL_VARIABLE]
    assert redis_url.endswith("/15"), "only Redis database 15 is the tests'"
    directory = tmp_path_factory.mktemp("two-instances")
    port = shared_port()
    common = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": mysql_url,
        "REDIS_URL": redis_url,
        "USERQL_ENV": "production",
        "JWT_SECRET": TEST_SECRET,
        "WEB_CONCURRENCY": "2",
        "TRUSTED_PROXIES": "1",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        # Two createUser an hour per address and per user: no window turns over in the test.
        "RATE_LIMIT_CREATE_USER": "2/3600",
    }
    with ExitStack() as stack:
        clean(mysql_url, redis_url)
        stack.callback(clean, mysql_url, redis_url)
        userql(common, directory, "migrate")
        userql(common, directory, "create-admin", "--email", "ops@example.com", "--name", "Ops")
        token = userql(common, directory, "issue-token", "--email", "ops@example.com").strip()
        instances = {}
        for name, address in zip("AB", ADDRESSES, strict=True):
            env = {**common, "BIND": f"{address}:{port}", "HEALTH_PORT": str(free_port())}
            log = directory / f"gunicorn-{name}.log"
            with log.open("wb") as output:
                process = start_gunicorn(env, output)
            stack.callback(stop, process)
            instances[name] = Instance(name, f"http://{address}:{port}", log, process)
        for instance in instances.values():
            wait_until_ready(instance.base, instance.process, instance.log)
        resolver = Resolver(UPSTREAM_NAME, ADDRESSES)
        stack.callback(resolver.close)
        proxy = stack.enter_context(
            nginx_with_resolver(f"{UPSTREAM_NAME}:{port}", f"127.0.0.1:{resolver.port}")
        )
        yield Cluster(instances, proxy, token, resolver)


def answered(instance: Instance, prefix: str) -> Counter[str]:
    """The request ids starting with `prefix` in the instance's request log, each with how
    many times it was logged."""
    ids: Counter[str] = Counter()
    for line in instance.log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        request_id = entry.get("request_id")
        if entry.get("logger") == "userql.request" and str(request_id).startswith(prefix):
            ids[request_id] += 1
    return ids


def request(
    port: int, method: str, path: str, headers: dict[str, str], body: Any = None, host: str = ""
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, data, {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def by_request_log(cluster: Cluster, prefix: str) -> dict[str, Counter[str]]:
    return {name: answered(instance, prefix) for name, instance in cluster.instances.items()}


# --- the checks, in this order (the last stops instance A) ------------------------------------


def test_the_rate_limit_is_counted_across_both_instances(cluster: Cluster) -> None:
    """Two createUser an hour for the one admin from the one address: the third and every
    later one is RATE_LIMITED, whichever instance answers it; both answer some."""
    outcomes: dict[str, str] = {}
    for number in range(20):
        request_id = f"rate-{number}"
        status, body = request(
            cluster.proxy.port,
            "POST",
            "/graphql",
            {"Authorization": f"Bearer {cluster.token}", "X-Request-ID": request_id},
            {
                "query": CREATE_USER,
                "variables": {"input": {"name": "Someone", "email": f"u{number}@example.com"}},
            },
        )
        assert status == 200, body
        if errors := body.get("errors"):
            outcomes[request_id] = errors[0]["extensions"]["code"]
        else:
            outcomes[request_id] = body["data"]["createUser"]["__typename"]
    logged = by_request_log(cluster, "rate-")
    where = {request_id: name for name, ids in logged.items() for request_id in ids}
    assert set(where) == set(outcomes), (where, outcomes)
    assert all(count == 1 for ids in logged.values() for count in ids.values()), logged
    assert [outcomes[f"rate-{n}"] for n in range(2)] == ["CreateUserSuccess"] * 2, outcomes
    assert {outcomes[f"rate-{n}"] for n in range(2, 20)} == {"RATE_LIMITED"}, outcomes
    limited_by = Counter(where[f"rate-{n}"] for n in range(2, 20))
    assert set(limited_by) == {"A", "B"}, limited_by
    REPORT.append(
        "two instances, rate limit 2/3600: 2 created, 18 RATE_LIMITED"
        f" (A answered {limited_by['A']}, B {limited_by['B']} of them)"
    )


def persisted(document: str) -> dict[str, Any]:
    key = hashlib.sha256(document.encode()).hexdigest()
    return {"persistedQuery": {"version": 1, "sha256Hash": key}}


def test_a_persisted_query_registered_through_one_is_served_by_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster.instances["A"], cluster.instances["B"]
    document = "query TwoInstances { me { id email } }"
    extensions = persisted(document)
    # Not yet registered: B does not know it.
    status, body = call(f"{b.base}/graphql", {"extensions": extensions}, token=cluster.token)
    assert body["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND", body
    status, registered = call(
        f"{a.base}/graphql", {"query": document, "extensions": extensions}, token=cluster.token
    )
    assert status == 200, registered
    assert registered["data"]["me"]["email"] == "ops@example.com", registered
    status, served = call(f"{b.base}/graphql", {"extensions": extensions}, token=cluster.token)
    assert (status, served) == (200, registered)
    # Through the proxy, whichever instance answers.
    for number in range(6):
        status, served = request(
            cluster.proxy.port,
            "POST",
            "/graphql",
            {"Authorization": f"Bearer {cluster.token}", "X-Request-ID": f"apq-{number}"},
            {"extensions": extensions},
        )
        assert (status, served) == (200, registered)
    logged = by_request_log(cluster, "apq-")
    assert sum(sum(ids.values()) for ids in logged.values()) == 6, logged


def established_to(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local end is `port` on the loopback (the
    gunicorn side of a connection from nginx)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def test_a_slow_header_client_at_the_proxy_does_not_reach_gunicorn(cluster: Cluster) -> None:
    """A client sends its headers a byte every 0.5 s for 3 s: meanwhile no instance has a
    connection for it nor logs it, and /livez through the proxy answers at once; when its
    headers are at last complete, it is answered, once, by one instance."""
    port = urllib.parse.urlsplit(cluster.instances["A"].base).port
    assert port is not None
    query = urllib.parse.quote("{ __typename }")
    head = (
        f"GET /graphql?query={query} HTTP/1.1\r\nHost: slow.example\r\n"
        "X-Request-ID: slow-client\r\nGraphQL-Require-Preflight: 1\r\nX-Slow: "
    ).encode()
    probes: list[float] = []
    connections: list[int] = []
    with socket.create_connection(("127.0.0.1", cluster.proxy.port), timeout=10) as client:
        client.sendall(head)
        began = time.monotonic()
        while time.monotonic() - began < 3.0:
            client.sendall(b"s")
            started = time.monotonic()
            status, body = request(cluster.proxy.port, "GET", "/livez", {})
            probes.append(time.monotonic() - started)
            assert (status, body) == (200, {"status": "ok"})
            connections.append(established_to(port))
            assert not any(by_request_log(cluster, "slow-").values())
            time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
        client.sendall(b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    # gunicorn flushes each log line as it writes it; allow it a moment after the answer.
    deadline = time.monotonic() + 5
    while sum(sum(ids.values()) for ids in by_request_log(cluster, "slow-").values()) != 1:
        assert time.monotonic() < deadline, by_request_log(cluster, "slow-")
        time.sleep(0.1)
    assert len(probes) >= 5
    assert max(probes) < 0.5, probes
    assert connections == [0] * len(connections), connections
    REPORT.append(
        f"two instances, slow-header client: {len(probes)} /livez through the proxy meanwhile,"
        f" slowest {max(probes) * 1000:.1f} ms; gunicorn connections meanwhile {max(connections)}"
    )


def test_a_sigterm_to_one_instance_under_load_loses_no_request(cluster: Cluster) -> None:
    a, b = cluster.instances["A"], cluster.instances["B"]
    error_log = cluster.proxy.log
    errors_before = len(error_log.read_text(errors="replace").splitlines())
    path = "/graphql?query=" + urllib.parse.quote(ME)
    results: list[tuple[str, int, Any]] = []
    failures: list[tuple[str, BaseException]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + LOAD_SECONDS

    def load(thread: int) -> None:
        for number in range(LOAD_PER_THREAD):
            if time.monotonic() >= stop_at:
                return
            request_id = f"load-{thread}-{number}"
            headers = {
                **GET_HEADERS,
                "Authorization": f"Bearer {cluster.token}",
                "X-Request-ID": request_id,
            }
            try:
                status, body = request(cluster.proxy.port, "GET", path, headers)
            except (OSError, http.client.HTTPException, ValueError) as error:
                with lock:
                    failures.append((request_id, error))
                continue
            with lock:
                results.append((request_id, status, body))

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(SIGTERM_AFTER)
    signalled = time.monotonic()
    running = sum(thread.is_alive() for thread in threads)
    a.process.send_signal(signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        a.process.wait(timeout=LOAD_SECONDS + 40)
    exited_after = time.monotonic() - signalled
    for thread in threads:
        thread.join(timeout=LOAD_SECONDS + 40)
    assert not any(thread.is_alive() for thread in threads)
    load_seconds = time.monotonic() - (stop_at - LOAD_SECONDS)
    a.process.wait(timeout=5)
    assert a.process.returncode == 0, a.log.read_text()[-3000:]

    # B keeps serving, through the proxy and on its own address.
    after = [
        request(
            cluster.proxy.port,
            "GET",
            path,
            {
                **GET_HEADERS,
                "Authorization": f"Bearer {cluster.token}",
                "X-Request-ID": f"after-{n}",
            },
        )[0]
        for n in range(10)
    ]
    ready = call(f"{b.base}/readyz")[0]

    errors = error_log.read_text(errors="replace").splitlines()[errors_before:]
    # One [error] line per upstream error ("connect() failed (111: ...)", "recv() failed
    # (104: ...)"), each followed by a [warn] "upstream server temporarily disabled".
    upstream_errors = [
        line
        for line in errors
        if "failed (" in line and any(words in line for words in UPSTREAM_ERRORS)
    ]
    refused = sum("Connection refused" in line for line in upstream_errors)
    logged = by_request_log(cluster, "load-")
    statuses = Counter(status for _, status, _ in results)
    non_200 = [(request_id, status, body) for request_id, status, body in results if status != 200]
    total = len(results) + len(failures)
    REPORT.append(
        f"two instances, SIGTERM to A after {SIGTERM_AFTER:.0f} s of {LOAD_SECONDS:.0f} s load"
        f" ({LOAD_THREADS} threads, {load_seconds:.1f} s): {total} requests,"
        f" {len(non_200) + len(failures)} non-200,"
        f" {len(upstream_errors)} upstream errors nginx retried"
        f" ({refused} connection refused, {len(upstream_errors) - refused} reset after"
        " the request was sent);"
        f" answered by A {sum(logged['A'].values())}, B {sum(logged['B'].values())};"
        f" A exited {exited_after:.1f} s after SIGTERM; afterwards {after.count(200)}/10 OK via B"
    )
    assert running == LOAD_THREADS, "the load ended before the SIGTERM"
    assert not failures, failures[:5]
    assert not non_200, (statuses, non_200[:5], upstream_errors[:5])
    assert all(body == {"data": {"me": {"id": body["data"]["me"]["id"]}}} for _, _, body in results)
    # Each request answered exactly once, by one of the two.
    ids = {request_id for request_id, _, _ in results}
    assert not set(logged["A"]) & set(logged["B"])
    assert set(logged["A"]) | set(logged["B"]) == ids
    assert all(count == 1 for counts in logged.values() for count in counts.values())
    assert logged["A"]
    assert logged["B"]
    assert after == [200] * 10
    assert ready == 200
