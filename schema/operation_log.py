from collections.abc import Iterator
from dataclasses import dataclass, field

from opentelemetry.trace import SpanKind, Status, StatusCode
from strawberry.extensions import SchemaExtension

# The GraphQL conventions' name for a span whose operation never became known.
UNKNOWN_OPERATION = "GraphQL Operation"


@dataclass(slots=True)
class RequestLog:
    """What the request log line, the metrics and the trace say about a request, filled in
    as the request runs."""

    principal_id: int | None = None
    operation_name: str | None = None
    operation_type: str | None = None
    error_codes: list[str] = field(default_factory=list)
    trace_id: str | None = None
    span_id: str | None = None
    document_cache_hits: int = 0
    document_cache_misses: int = 0
    persisted_query_hits: int = 0
    persisted_query_misses: int = 0
    rate_limited: list[str] = field(default_factory=list)
    """The rate limits that refused a field."""


class OperationLog(SchemaExtension):
    """Records which operation ran, for the request log, and traces it when tracing is on:
    one span per operation, named by its type, never by a field. Never variables or the
    document."""

    _executed = False
    """Whether the operation reached execution (a valid document), so its type is known."""

    def on_operation(self) -> Iterator[None]:
        execution = self.execution_context
        tracer = execution.context.tracer
        if tracer is None:
            yield
            return
        # The HTTP edge's span is the request's one SERVER span; the operation is its child.
        with tracer.start_as_current_span(
            UNKNOWN_OPERATION, kind=SpanKind.INTERNAL, record_exception=False
        ) as span:
            yield
            log: RequestLog = execution.context.log
            if self._executed:
                span.update_name(log.operation_type or UNKNOWN_OPERATION)
                span.set_attribute("graphql.operation.type", log.operation_type or "")
                if log.operation_name is not None:
                    span.set_attribute("graphql.operation.name", log.operation_name)
            result = execution.result
            if result is not None and result.errors:
                codes = [(error.extensions or {}).get("code") for error in result.errors]
                span.set_attribute("error.type", str(codes[0] or "GRAPHQL_ERROR"))
                span.set_status(Status(StatusCode.ERROR))

    def on_execute(self) -> Iterator[None]:
        # Reached only with a valid document, so the operation is known here.
        execution = self.execution_context
        log: RequestLog = execution.context.log
        log.operation_name = execution.operation_name
        log.operation_type = execution.operation_type.value
        self._executed = True
        yield
