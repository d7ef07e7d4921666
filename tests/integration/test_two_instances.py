"""Two gunicorn instances of userql behind the compose file's balancer (Debian's HAProxy
with deploy/haproxy/haproxy.cfg, as tests/deploy/test_proxy.py runs it), sharing MariaDB and
Redis, all on the loopback.

One upstream name with two addresses, as `docker compose up --scale api=2` gives HAProxy: a
DNS server of the test's own (tests/dns_server.py) answers the name with 127.0.0.2 and
127.0.0.3, and one instance listens on each, on the same ports (API and health).

- A rate limit is counted across both instances.
- A persisted query registered through one instance is served by the other.
- A slow-header client at the balancer never reaches gunicorn.
- A SIGTERM to one instance during a bounded load of mutations (POST, with an
  Idempotency-Key and without one) and queries (GET) loses no request: each is answered
  200, each change is made once. The instance drains (SHUTDOWN_DRAIN_SECONDS): it serves on
  while its /readyz says draining, HAProxy takes it out of rotation, and only then does it
  close its listener; the other keeps serving.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import delete, select

from db import models
from db.session import make_engine, make_session_factory
from tests.conftest import MYSQL_URL_VARIABLE, REDIS_URL_VARIABLE, TEST_SECRET
from tests.deploy import test_proxy
from tests.dns_server import Resolver
from tests.factories import make_user
from tests.graphql import CREATE_USER
from tests.report import REPORT
from tests.servers import call, free_port, start_gunicorn, stop, userql, wait_until_ready

pytestmark = [pytest.mark.mysql, pytest.mark.redis, pytest.mark.proxy]

UPSTREAM_NAME = "userql-api.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
ME = "{ me { id } }"
# GET needs this header (the app's CSRF guard).
GET_HEADERS = {"GraphQL-Require-Preflight": "1"}
UPDATE_NAME = """
mutation Rename($id: ID!, $name: String!) {
  updateUser(id: $id, input: {name: $name}) {
    __typename
    ... on UpdateUserSuccess { user { name } }
  }
}
"""
LOAD_THREADS = 8
LOAD_PER_THREAD = 600
SIGTERM_AFTER = 1.0
# Above HAProxy's time to take an instance out (haproxy.cfg: a check every 1 s, out after
# two failed ones), with room for a check that comes late on a busy machine.
DRAIN_SECONDS = 4.0
# The load goes on past the drain's end, when the instance closes its listener.
LOAD_SECONDS = SIGTERM_AFTER + DRAIN_SECONDS + 2.0


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
    proxy: test_proxy.Haproxy
    token: str
    resolver: Resolver
    mysql_url: str


def shared_port(taken: int = 0) -> int:
    """A port free on both loopback addresses (and not `taken`)."""
    for _ in range(50):
        port = free_port()
        if port == taken:
            continue
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
        for model in (models.IdempotencyKey, models.AuditEvent, models.User):
            connection.execute(delete(model))
    engine.dispose()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    mysql_url = os.environ[MYSQL_URL_VARIABLE]
    redis_url = os.environ[REDIS_URL_VARIABLE]
    # Emptied before and after: never the database an app would use by default.
    assert urllib.parse.urlsplit(redis_url).path.strip("/") not in {"", "0"}, redis_url
    directory = tmp_path_factory.mktemp("two-instances")
    port = shared_port()
    health_port = shared_port(taken=port)
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
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
    }
    with ExitStack() as stack:
        userql(common, directory, "migrate")
        clean(mysql_url, redis_url)
        stack.callback(clean, mysql_url, redis_url)
        userql(common, directory, "create-admin", "--email", "ops@example.com", "--name", "Ops")
        token = userql(common, directory, "issue-token", "--email", "ops@example.com").strip()
        instances = {}
        for name, address in zip("AB", ADDRESSES, strict=True):
            env = {**common, "BIND": f"{address}:{port}", "HEALTH_PORT": str(health_port)}
            log = directory / f"gunicorn-{name}.log"
            with log.open("wb") as output:
                process = start_gunicorn(env, output)
            stack.callback(stop, process, DRAIN_SECONDS + 5)
            instances[name] = Instance(name, f"http://{address}:{port}", log, process)
        for instance in instances.values():
            wait_until_ready(instance.base, instance.process, instance.log)
        resolver = Resolver(UPSTREAM_NAME, ADDRESSES)
        stack.callback(resolver.close)
        proxy = stack.enter_context(
            test_proxy.haproxy(f"{UPSTREAM_NAME}:{port}", health_port, resolver.address)
        )
        test_proxy.wait_until_serving(proxy)
        yield Cluster(instances, proxy, token, resolver, mysql_url)


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
    status, _, answer = exchange(port, method, path, headers, body, host)
    return status, answer


def exchange(
    port: int, method: str, path: str, headers: dict[str, str], body: Any = None, host: str = ""
) -> tuple[int, http.client.HTTPMessage, Any]:
    """One request on a connection of its own: status, headers and JSON body."""
    connection = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, data, {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, response.headers, json.loads(response.read() or b"null")
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
    gunicorn side of a connection from HAProxy)."""
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


def load_targets(cluster: Cluster) -> list[str]:
    """One user per load thread, each renamed only by its own thread; their GraphQL ids."""
    engine = make_engine(cluster.mysql_url)
    try:
        emails = [
            make_user(make_session_factory(engine), email=f"target-{n}@example.com").email
            for n in range(LOAD_THREADS)
        ]
    finally:
        engine.dispose()
    status, body = request(
        cluster.proxy.port,
        "POST",
        "/graphql",
        {"Authorization": f"Bearer {cluster.token}"},
        {"query": "{ users(first: 100) { edges { node { id email } } } }"},
    )
    assert status == 200, body
    ids = {edge["node"]["email"]: edge["node"]["id"] for edge in body["data"]["users"]["edges"]}
    return [ids[email] for email in emails]


def audited(mysql_url: str, prefix: str) -> Counter[str]:
    """How many audit events each request id starting with `prefix` wrote."""
    engine = make_engine(mysql_url)
    try:
        with engine.connect() as connection:
            ids = connection.execute(
                select(models.AuditEvent.request_id).where(
                    models.AuditEvent.request_id.startswith(prefix)
                )
            ).scalars()
            return Counter(str(request_id) for request_id in ids)
    finally:
        engine.dispose()


def test_a_sigterm_to_one_instance_under_load_loses_no_request(cluster: Cluster) -> None:
    """Each load thread takes turns at a rename of its own user with an Idempotency-Key
    (POST), a query (GET) and a rename without a key (POST) until LOAD_SECONDS are up;
    instance A gets SIGTERM after SIGTERM_AFTER. A drains: it serves on while its /readyz
    answers 503, until HAProxy has marked it DOWN and sends everything to B; then gunicorn
    finishes what A's workers accepted and exits. A POST without a key cannot be sent twice,
    so none may be lost when A closes its listener: nothing new is queued there by then.
    What HAProxy does send again (a query, a keyed rename) the app answers once, or from
    the first (a replay of its key)."""
    a, b = cluster.instances["A"], cluster.instances["B"]
    targets = load_targets(cluster)
    log_before = len(cluster.proxy.requests())
    path = "/graphql?query=" + urllib.parse.quote(ME)
    # (request id, method, status, body, replayed)
    results: list[tuple[str, str, int, Any, bool]] = []
    failures: list[tuple[str, BaseException]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + LOAD_SECONDS

    def load(thread: int) -> None:
        for number in range(LOAD_PER_THREAD):
            if time.monotonic() >= stop_at:
                return
            request_id = f"load-{thread}-{number}"
            headers = {"Authorization": f"Bearer {cluster.token}", "X-Request-ID": request_id}
            try:
                if number % 3 == 1:
                    method = "GET"
                    status, answer, body = exchange(
                        cluster.proxy.port, method, path, {**GET_HEADERS, **headers}
                    )
                else:
                    method = "POST"
                    variables = {"id": targets[thread], "name": f"Load {thread} {number}"}
                    key = {"Idempotency-Key": request_id} if number % 3 == 0 else {}
                    status, answer, body = exchange(
                        cluster.proxy.port,
                        method,
                        "/graphql",
                        {**headers, **key},
                        {"query": UPDATE_NAME, "variables": variables},
                    )
            except (OSError, http.client.HTTPException, ValueError) as error:
                with lock:
                    failures.append((request_id, error))
                continue
            replayed = answer.get("Idempotent-Replayed") == "true"
            with lock:
                results.append((request_id, method, status, body, replayed))

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

    # B keeps serving, through the balancer and on its own address.
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

    entries = [
        e
        for e in cluster.proxy.requests(*(request_id for request_id, *_ in results))[log_before:]
        if e["request_id"].startswith("load-")
    ]
    retried = [entry for entry in entries if entry["retries"] not in {"0", "+0"}]
    retries = sum(int(entry["retries"].lstrip("+")) for entry in retried)
    down = "is DOWN" in cluster.proxy.log.read_text(errors="replace")
    logged = by_request_log(cluster, "load-")
    events = audited(cluster.mysql_url, "load-")
    posts = {request_id for request_id, method, *_ in results if method == "POST"}
    gets = {request_id for request_id, method, *_ in results if method == "GET"}
    unkeyed = {request_id for request_id in posts if int(request_id.split("-")[2]) % 3 == 2}
    replays = sum(replayed for *_, replayed in results)
    non_200 = [
        (request_id, status, body) for request_id, _, status, body, _ in results if status != 200
    ]
    total = len(results) + len(failures)
    REPORT.append(
        f"two instances, SIGTERM to A (drain {DRAIN_SECONDS:.0f} s) after {SIGTERM_AFTER:.0f} s"
        f" of {LOAD_SECONDS:.0f} s load ({LOAD_THREADS} threads, {load_seconds:.1f} s):"
        f" {total} requests ({len(posts) - len(unkeyed)} keyed POST renames,"
        f" {len(unkeyed)} unkeyed, {len(gets)} GET),"
        f" {len(non_200) + len(failures)} errors; HAProxy retried {len(retried)} of them"
        f" ({retries} retries), {replays} answered as a replay of their key;"
        f" answered by A {sum(logged['A'].values())}, B {sum(logged['B'].values())};"
        f" A exited {exited_after:.1f} s after SIGTERM{' and was marked DOWN' if down else ''};"
        f" afterwards {after.count(200)}/10 OK via B"
    )
    assert running == LOAD_THREADS, "the load ended before the SIGTERM"
    assert not failures, failures[:5]
    assert not non_200, (non_200[:5], retried[:5])
    for request_id, method, _, body, _ in results:
        if method == "GET":
            assert body == {"data": {"me": {"id": body["data"]["me"]["id"]}}}, (request_id, body)
        else:
            sender, number = request_id.split("-")[1:]
            assert body == {
                "data": {
                    "updateUser": {
                        "__typename": "UpdateUserSuccess",
                        "user": {"name": f"Load {sender} {number}"},
                    }
                }
            }, (request_id, body)
    # Every request in HAProxy's log once, answered 200.
    assert Counter(entry["request_id"] for entry in entries) == Counter(posts | gets)
    assert {entry["status"] for entry in entries} == {"200"}
    # Each rename changed its user once: one audit event each, replays or not.
    assert events == Counter(dict.fromkeys(posts, 1)), events - Counter(dict.fromkeys(posts, 1))
    # Each query answered by one instance, once; a rename once, or once more as a replay.
    answered_by = Counter({**logged["A"]}) + Counter({**logged["B"]})
    assert {request_id: answered_by[request_id] for request_id in gets} == dict.fromkeys(gets, 1)
    assert all(1 <= answered_by[request_id] <= 2 for request_id in posts)
    # A rename without a key is never sent twice: answered by one instance, once.
    assert {request_id: answered_by[request_id] for request_id in unkeyed} == dict.fromkeys(
        unkeyed, 1
    )
    assert sum(answered_by[request_id] - 1 for request_id in posts) == replays
    assert unkeyed
    # Out of rotation while it drained, before its listener closed.
    assert down
    assert exited_after >= DRAIN_SECONDS, exited_after
    assert logged["A"]
    assert logged["B"]
    assert after == [200] * 10
    assert ready == 200
