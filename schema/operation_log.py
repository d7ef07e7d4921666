from collections.abc import Iterator
from dataclasses import dataclass, field

from strawberry.extensions import SchemaExtension


@dataclass(slots=True)
class RequestLog:
    """What the request log line says about a request, filled in as the request runs."""

    principal_id: int | None = None
    operation_name: str | None = None
    operation_type: str | None = None
    error_codes: list[str] = field(default_factory=list)


class OperationLog(SchemaExtension):
    """Records which operation ran, for the request log. Never variables or the document."""

    def on_execute(self) -> Iterator[None]:
        # Reached only with a valid document, so the operation is known here.
        execution = self.execution_context
        log: RequestLog = execution.context.log
        log.operation_name = execution.operation_name
        log.operation_type = execution.operation_type.value
        yield
