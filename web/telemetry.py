"""The HTTP edge's half of tracing and metrics: the request's SERVER span (continuing the
caller's trace from `traceparent`), a GraphQL request's metrics from its RequestLog, and
GET /metrics for whoever METRICS_ACCESS admits."""

import hmac
import ipaddress
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from db import statements
from schema.operation_log import RequestLog
from services import metrics as metrics_module
from services import telemetry
from services.metrics import MetricsAccess, OperationNames, child
from web.errors import json_error
from web.persisted import operation_names as operation_names_of
from web.request_log import current_globals, current_request

GRAPHQL_PATH = "/graphql"
METRICS_PATH = "/metrics"


def register(
    app: Flask,
    instruments: telemetry.Telemetry,
    *,
    access: MetricsAccess,
    token: str | None,
    trusted: Mapping[str, str] | None,
) -> None:
    """After web.request_log.register: its RequestLog and start time are there already.
    `trusted`: the trusted-documents manifest, whose operation names are the labels."""
    operation_names = OperationNames(None if trusted is None else operation_names_of(trusted))
    if instruments.on:
        _observe_requests(app, instruments, operation_names)
    if access is not MetricsAccess.OFF:
        _serve_metrics(app, access, token)


def _observe_requests(
    app: Flask, instruments: telemetry.Telemetry, operation_names: OperationNames
) -> None:
    tracer, measures = instruments.tracer, instruments.metrics

    @app.before_request
    def begin() -> None:
        globals_ = current_globals()
        if measures is not None:
            globals_.statements_token = statements.start()
        if tracer is not None:
            globals_.telemetry_token = telemetry.begin_request(tracer)
            _start_span(tracer, globals_)

    @app.after_request
    def answer(response: Response) -> Response:
        globals_ = current_globals()
        span = globals_.get("span")
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(Status(StatusCode.ERROR))
        if measures is not None:
            _record(measures, operation_names, response)
        return response

    @app.teardown_request
    def end(_error: BaseException | None) -> None:
        globals_ = current_globals()
        if (span_token := globals_.pop("span_token", None)) is not None:
            otel_context.detach(span_token)
        if (span := globals_.pop("span", None)) is not None:
            span.end()
        if (token := globals_.pop("telemetry_token", None)) is not None:
            telemetry.end_request(token)
        if (counting := globals_.pop("statements_token", None)) is not None:
            statements.end(counting)


def _start_span(tracer: trace.Tracer, globals_: Any) -> None:
    request = current_request()
    rule = request.url_rule
    route = rule.rule if rule is not None else None
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "client.address": request.remote_addr or "",
    }
    if route is not None:
        attributes["http.route"] = route
    span = tracer.start_span(
        f"{request.method} {route}" if route else request.method,
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
    )
    globals_.span = span
    globals_.span_token = otel_context.attach(trace.set_span_in_context(span))
    log: RequestLog | None = globals_.get("request_log")
    if log is not None:
        span_context = span.get_span_context()
        log.trace_id = trace.format_trace_id(span_context.trace_id)
        log.span_id = trace.format_span_id(span_context.span_id)


def _record(
    measures: metrics_module.Metrics, operation_names: OperationNames, response: Response
) -> None:
    """A GraphQL request's metrics, from what its RequestLog says."""
    globals_ = current_globals()
    log: RequestLog | None = globals_.get("request_log")
    counting = globals_.pop("statements_token", None)
    sent = 0 if counting is None else statements.end(counting)
    if log is None or counting is None or current_request().path != GRAPHQL_PATH:
        return
    if response.content_type.startswith("text/html"):
        return  # GraphiQL's page, not a GraphQL request
    operation_type = log.operation_type or metrics_module.NONE
    name = operation_names.label(log.operation_name) if log.operation_type else metrics_module.NONE
    outcome = "error" if log.error_codes or response.status_code >= 400 else "ok"
    child(measures.requests, name, operation_type, outcome).inc()
    if log.error_codes:
        measures.count_errors(log.error_codes)
    started: float = globals_.started
    child(measures.duration, name, operation_type).observe(time.monotonic() - started)
    measures.statements.observe(sent)
    for limit in log.rate_limited:
        child(measures.rate_limited, limit).inc()
    _count(measures.document_cache, log.document_cache_hits, log.document_cache_misses)
    _count(measures.persisted_queries, log.persisted_query_hits, log.persisted_query_misses)


def _count(counter: Any, hits: int, misses: int) -> None:
    if hits:
        child(counter, "hit").inc(hits)
    if misses:
        child(counter, "miss").inc(misses)


def _serve_metrics(app: Flask, access: MetricsAccess, token: str | None) -> None:
    expected = f"Bearer {token}".encode() if token is not None else None

    def metrics_endpoint() -> Response:
        request = current_request()
        if access is MetricsAccess.LOOPBACK and not _is_loopback(request.remote_addr):
            return json_error("Metrics are served to this machine only.", "FORBIDDEN", 403)
        if access is MetricsAccess.TOKEN:
            sent = request.headers.get("Authorization", "").encode()
            if expected is None or not hmac.compare_digest(sent, expected):
                response = json_error("Metrics need the metrics token.", "UNAUTHENTICATED", 401)
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
        body, content_type = metrics_module.exposition()
        response = Response(body, content_type=content_type)
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule(METRICS_PATH, "metrics", metrics_endpoint, methods=["GET"])


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
