"""Metrics and traces as deployed: gunicorn with two workers.

- /metrics adds up both workers' counts (prometheus-client's multiprocess mode), and
  Prometheus' own promtool finds the scrape clean.
- Traces leave over OTLP/HTTP to a receiver of the test's own that decodes the protobuf
  (opentelemetry-proto), so the exporter's real wire format is what is checked.
"""

import gzip
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PROMTOOL_VARIABLE, TEST_SECRET
from tests.servers import (
    call,
    free_port,
    only,
    serving_workers,
    start_gunicorn,
    stop,
    wait_until_ready,
    workers_of,
)

pytestmark = pytest.mark.promtool
COUNT = {"query": "query Counted { __typename }", "operationName": "Counted"}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@contextmanager
def gunicorn(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, list[int], Path]]:
    """gunicorn with two workers, once both take connections: its URL, workers and log."""
    log, bind = tmp_path / "server.log", f"127.0.0.1:{free_port()}"
    with log.open("wb") as output:
        process = start_gunicorn(
            {
                "USERQL_ENV": "production",
                "JWT_SECRET": TEST_SECRET,
                "BIND": bind,
                "WEB_CONCURRENCY": "2",
                **env,
            },
            output,
        )
    try:
        wait_until_ready(f"http://{bind}", process, log)
        yield f"http://{bind}", serving_workers(process, log), log
    finally:
        for worker in workers_of(process):
            os.kill(worker, signal.SIGCONT)  # one `only` stopped must hear the SIGTERM
        stop(process)


def scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_add_up_across_two_workers_and_promtool_finds_them_clean(
    database_url: str, engine: object, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": database_url, "METRICS_ACCESS": "loopback"}
    with gunicorn(env, tmp_path) as (base, (first, second), log):
        # A new connection each time, and one worker awake at a time: each answers its share.
        for answering, count in ((first, 3), (second, 4)):
            with only([first, second], answering):
                for _ in range(count):
                    status, _ = call(f"{base}/graphql", COUNT, headers={"Connection": "close"})
                    assert status == 200
        answered = [
            json.loads(line)["pid"]
            for line in log.read_text().splitlines()
            if '"userql.request"' in line and '"Counted"' in line
        ]
        assert sorted(answered) == sorted([first] * 3 + [second] * 4)
        with only([first, second], first):
            from_first = scrape(base)
        with only([first, second], second):
            from_second = scrape(base)
    for text in (from_first, from_second):
        requests = total(
            text,
            "userql_graphql_requests_total",
            operation_name="Counted",
            operation_type="query",
            outcome="ok",
        )
        assert requests == 7, "either worker's scrape counts both workers' requests"
        assert (
            total(
                text,
                "userql_graphql_request_duration_seconds_count",
                operation_name="Counted",
                operation_type="query",
            )
            == 7
        )
    result = subprocess.run(
        [os.environ[PROMTOOL_VARIABLE], "check", "metrics"],
        input=from_first,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", "promtool found nothing to warn about"


class Receiver:
    """An OTLP/HTTP traces endpoint: what it was sent, decoded from protobuf."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        self.arrived = threading.Event()

    def spans(self) -> list[dict[str, Any]]:
        return [
            {
                "name": span.name,
                "kind": span.kind,
                "trace_id": span.trace_id.hex(),
                "span_id": span.span_id.hex(),
                "parent_span_id": span.parent_span_id.hex(),
                "attributes": {a.key: _value(a.value) for a in span.attributes},
                "service": {a.key: _value(a.value) for a in resource_spans.resource.attributes}.get(
                    "service.name"
                ),
            }
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.requests.append(request)
            receiver.content_types.append(self.headers.get("Content-Type", ""))
            receiver.arrived.set()
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", receiver
    finally:
        server.shutdown()
        server.server_close()


def test_traces_leave_over_otlp_http_as_protobuf_and_continue_the_callers_trace(
    database_url: str, engine: object, tmp_path: Path
) -> None:
    with otlp_receiver() as (endpoint, receiver):
        env = {
            "DATABASE_URL": database_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            # The batch processor's wait before it sends: short, so the test is too.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "userql-under-test",
        }
        with gunicorn(env, tmp_path) as (base, _workers, log):
            status, _ = call(f"{base}/graphql", COUNT, headers={"traceparent": TRACEPARENT})
            assert status == 200
            deadline = time.monotonic() + 15
            while not any(span["name"] == "query" for span in receiver.spans()):
                assert time.monotonic() < deadline, "no operation span reached the receiver"
                receiver.arrived.wait(0.2)
            [line] = [
                json.loads(text)
                for text in log.read_text().splitlines()
                if '"userql.request"' in text and '"Counted"' in text
            ]
    spans = [span for span in receiver.spans() if span["trace_id"] == TRACE_ID]
    [server] = [span for span in spans if span["name"] == "POST /graphql"]
    [operation] = [span for span in spans if span["name"] == "query"]
    assert set(receiver.content_types) == {"application/x-protobuf"}
    # OTLP's SpanKind: SERVER is 2, INTERNAL 1.
    assert (server["kind"], operation["kind"]) == (2, 1)
    assert server["parent_span_id"] == "b7ad6b7169203331"
    assert operation["parent_span_id"] == server["span_id"]
    assert operation["attributes"] == {
        "graphql.operation.type": "query",
        "graphql.operation.name": "Counted",
    }
    assert server["service"] == "userql-under-test"
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, server["span_id"])
