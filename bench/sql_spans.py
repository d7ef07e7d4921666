"""What a SQL span costs: userql's SQLAlchemy cursor events (services.telemetry) against
OpenTelemetry's official SQLAlchemy instrumentation, per statement, in one process.

    .venv/bin/python -m bench.sql_spans
    # the official instrumentation is not a dependency of userql; to compare with it:
    .venv/bin/pip install --target /tmp/otel-sqla --no-deps \\
        opentelemetry-instrumentation-sqlalchemy==0.66b2 opentelemetry-instrumentation==0.66b2 \\
        wrapt greenlet
    PYTHONPATH=/tmp/otel-sqla .venv/bin/python -m bench.sql_spans

Each way runs the same statements on a SQLite memory database inside a traced request,
in interleaved rounds; the figure is CPU microseconds per statement over plain SQLAlchemy,
medians of the rounds.
"""

import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from sqlalchemy import Engine, create_engine, text

from services import telemetry

STATEMENTS = 5_000
ROUNDS = 7


class Dropping(SpanExporter):
    """Takes every span and keeps none: what is measured is making them."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider() -> TracerProvider:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(Dropping()))
    return made


def userql_engine() -> tuple[Engine, Callable[[], object]]:
    engine = create_engine("sqlite://")
    tracer = provider().get_tracer("bench")
    telemetry.Telemetry(tracer=tracer).instrument_engine(engine, "writes")

    def in_request() -> object:
        return telemetry.begin_request(tracer)

    return engine, in_request


def official_engine() -> tuple[Engine, Callable[[], object]] | None:
    try:
        from opentelemetry.instrumentation.sqlalchemy import (  # type: ignore[import-not-found]
            SQLAlchemyInstrumentor,
        )
    except ImportError:
        return None
    engine = create_engine("sqlite://")
    # It declares SQLAlchemy < 2.1; it is measured anyway, its check skipped, to compare.
    SQLAlchemyInstrumentor().instrument(
        engine=engine, tracer_provider=provider(), skip_dep_check=True
    )
    return engine, lambda: None


def plain_engine() -> tuple[Engine, Callable[[], object]]:
    return create_engine("sqlite://"), lambda: None


def cpu_per_statement(engine: Engine, in_request: Callable[[], object]) -> float:
    token = in_request()
    statement = text("SELECT 1")
    with engine.connect() as connection:
        started = time.process_time()
        for _ in range(STATEMENTS):
            connection.execute(statement).scalar()
        elapsed = time.process_time() - started
    if token is not None:
        telemetry.end_request(token)  # type: ignore[arg-type]
    return elapsed / STATEMENTS * 1_000_000


def main() -> None:
    ways: dict[str, tuple[Engine, Callable[[], object]]] = {
        "plain": plain_engine(),
        "userql": userql_engine(),
    }
    if (official := official_engine()) is not None:
        ways["official"] = official
    rounds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(ROUNDS):
        for name, (engine, in_request) in ways.items():
            rounds[name].append(cpu_per_statement(engine, in_request))
    plain = statistics.median(rounds["plain"])
    print("| way | CPU µs per statement | a span's cost, µs |")
    print("|---|---|---|")
    for name, values in rounds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median - plain:+.1f} |")
    if official is None:
        print("\n(the official instrumentation is not installed: see this module's docstring)")


if __name__ == "__main__":
    main()
