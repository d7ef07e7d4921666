"""Traces and metrics as one collaborator, built once per app: each half is None when off,
and then nothing is hooked in for it, so an app with both off pays for neither.

Spans follow OpenTelemetry's conventions: the HTTP edge opens the SERVER span (web.telemetry),
each GraphQL operation is a child of it (schema.operation_log), every SQL statement is a
CLIENT child of whatever is current (`instrument_engine`, on SQLAlchemy's cursor events), and
so are the calls userql makes out (`Telemetry.outgoing`), which carry the trace on in
`traceparent`.
"""

import os
import time
import weakref
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from sqlalchemy import Engine, event

from db.connections import Databases
from services.metrics import Metrics, MetricsAccess, child

INSTRUMENTATION = "userql"
_SQL_SPAN = "_userql_span"
_DB_SYSTEMS = {"mysql": "mysql", "mariadb": "mariadb", "sqlite": "sqlite"}


def tracing_wanted(setting: bool | None, environ: Mapping[str, str]) -> bool:
    """TRACING if set, else whether the process environment names an OTLP endpoint; never
    with OTEL_SDK_DISABLED=true. The SDK reads only the process environment (not .env),
    so that is where this looks."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if setting is not None:
        return setting
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def otlp_tracer_provider() -> TracerProvider:
    """A provider that exports in batches over OTLP/HTTP, as the OTEL_* variables say
    (endpoint, headers, timeout, compression; sampling by OTEL_TRACES_SAMPLER). Made in each
    gunicorn worker after the fork, so each has its own export thread."""
    resource = Resource.create({SERVICE_VERSION: version("userql")})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "userql"}))
    provider = TracerProvider(resource=resource)
    # Imported only when traces leave the process: it brings requests and protobuf along.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@dataclass(frozen=True, slots=True)
class Telemetry:
    tracer: Tracer | None = None
    metrics: Metrics | None = None

    @classmethod
    def build(
        cls, tracing: bool | None, access: MetricsAccess, provider: TracerProvider | None = None
    ) -> "Telemetry":
        """Traces to `provider` if given, else over OTLP when `tracing_wanted`; metrics
        unless METRICS_ACCESS is off."""
        if provider is None and tracing_wanted(tracing, os.environ):
            provider = otlp_tracer_provider()
        return cls(
            tracer=None
            if provider is None
            else provider.get_tracer(INSTRUMENTATION, version("userql")),
            metrics=None if access is MetricsAccess.OFF else Metrics.get(),
        )

    def instrument(self, databases: Databases) -> None:
        """Every engine of the app, by its label."""
        # The writes' bind is an Engine, or in the tests a Connection of one (whose events
        # are its).
        self.instrument_engine(databases.session_factory.kw["bind"].engine, "writes")
        if databases.reading_engine is not None:
            self.instrument_engine(databases.reading_engine, "reads")
        if databases.replica is not None:
            self.instrument_engine(databases.replica.replica, "replica")

    @property
    def on(self) -> bool:
        return self.tracer is not None or self.metrics is not None

    def instrument_engine(self, engine: Engine, name: str) -> None:
        """SQL spans when tracing, the pool's gauges when counting. (Each request's
        statements are counted by the drivers: db.statements.)"""
        if self.tracer is not None and engine not in _STATEMENTS_HOOKED:
            _STATEMENTS_HOOKED.add(engine)
            _hook_statements(engine)
        if self.metrics is not None and engine not in _POOLS_WATCHED:
            _POOLS_WATCHED.add(engine)
            _watch_pool(engine, name, self.metrics)

    @contextmanager
    def outgoing(
        self, method: str, url: str, headers: MutableMapping[str, str]
    ) -> Iterator["OutgoingCall"]:
        """A call userql makes out: a CLIENT span whose context goes into `headers`."""
        call = OutgoingCall()
        if self.tracer is None:
            yield call
            return
        parts = urlsplit(url)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            # No query string and no credentials: either may hold a secret.
            "url.full": f"{parts.scheme}://{parts.hostname}{_port(parts.port)}{parts.path}",
            "server.address": parts.hostname or "",
        }
        if parts.port is not None:
            attributes["server.port"] = parts.port
        with self.tracer.start_as_current_span(
            method, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ) as span:
            propagate.inject(headers)
            try:
                yield call
            finally:
                if call.status is not None:
                    span.set_attribute("http.response.status_code", call.status)
                if call.error is not None:
                    span.set_attribute("error.type", call.error)
                    span.set_status(Status(StatusCode.ERROR))


def _port(port: int | None) -> str:
    return "" if port is None else f":{port}"


class OutgoingCall:
    """What an outgoing call learnt: its status, or why it failed."""

    __slots__ = ("error", "started", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.error: str | None = None
        self.started = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.started


# The tracer of the request this thread serves, for its statements' spans.
_tracer: ContextVar[Tracer | None] = ContextVar("request_tracer", default=None)


def begin_request(tracer: Tracer) -> Token[Tracer | None]:
    return _tracer.set(tracer)


def end_request(token: Token[Tracer | None]) -> None:
    _tracer.reset(token)


# Engines are shared by apps in one process (the tests build many): each is hooked once,
# and each request's own tracer (begin_request) is the one its statements report to.
_STATEMENTS_HOOKED: "weakref.WeakSet[Engine]" = weakref.WeakSet()
_POOLS_WATCHED: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _hook_statements(engine: Engine) -> None:
    dialect = engine.dialect.name
    url = engine.url
    fixed: dict[str, Any] = {"db.system.name": _DB_SYSTEMS.get(dialect, dialect)}
    if url.database:
        fixed["db.namespace"] = url.database
    if url.host:
        fixed["server.address"] = url.host
    if url.port:
        fixed["server.port"] = url.port

    @event.listens_for(engine, "before_cursor_execute")
    def _start(
        _connection: Any,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        tracer = _tracer.get()
        if tracer is None or context is None:
            return
        operation = statement.split(None, 1)[0].upper() if statement else "SQL"
        setattr(
            context,
            _SQL_SPAN,
            tracer.start_span(
                operation,
                kind=SpanKind.CLIENT,
                # The statement as sent, placeholders and all: bound values never reach it.
                attributes={**fixed, "db.operation.name": operation, "db.query.text": statement},
            ),
        )

    @event.listens_for(engine, "after_cursor_execute")
    def _end(
        _connection: Any,
        _cursor: Any,
        _statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        span = getattr(context, _SQL_SPAN, None)
        if span is not None:
            setattr(context, _SQL_SPAN, None)
            span.end()

    @event.listens_for(engine, "handle_error")
    def _failed(exception_context: Any) -> None:
        context = exception_context.execution_context
        span = getattr(context, _SQL_SPAN, None)
        if span is not None:
            setattr(context, _SQL_SPAN, None)
            span.set_attribute("error.type", type(exception_context.original_exception).__name__)
            span.set_status(Status(StatusCode.ERROR))
            span.end()


def _watch_pool(engine: Engine, name: str, metrics: Metrics) -> None:
    checked_out = child(metrics.pool_checked_out, name)
    overflow = child(metrics.pool_overflow, name)
    pool = engine.pool
    measures_overflow = hasattr(pool, "overflow")

    def _overflow() -> None:
        if measures_overflow:
            overflow.set(max(0, pool.overflow()))  # type: ignore[attr-defined]

    @event.listens_for(engine, "checkout")
    def _checkout(*_args: Any) -> None:
        checked_out.inc()
        _overflow()

    @event.listens_for(engine, "checkin")
    def _checkin(*_args: Any) -> None:
        checked_out.dec()
        _overflow()
