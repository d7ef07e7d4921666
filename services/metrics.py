"""Prometheus metrics: what /metrics exports, in prometheus-client's multiprocess mode under
gunicorn (every worker writes its own files in PROMETHEUS_MULTIPROC_DIR, and whichever worker
answers the scrape adds them up).

The metric objects exist once per process and only once an app turns metrics on
(`Metrics.get()`), so a process with metrics off creates no files and counts nothing. No
label carries a user id, an email, a token, a variable or a document: operation names are
capped (`OperationNames`), error codes and outcomes are the server's own.
"""

import enum
import os
import platform
import re
import threading
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any, ClassVar

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"

OTHER = "(other)"
ANONYMOUS = "(anonymous)"
NONE = "(none)"
# Names a gateway or a client made up are counted one by one up to this many per process;
# the rest share OTHER.
OPERATION_NAME_CAP = 100
# Seconds, from a primary-key read to a slow page under a deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATEMENT_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50)
_CODE_SHAPE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class MetricsAccess(enum.Enum):
    """Who may read /metrics (METRICS_ACCESS)."""

    OFF = "off"
    """No /metrics, and nothing counted."""
    LOOPBACK = "loopback"
    """Clients on this machine: the client's address (after TRUSTED_PROXIES) is loopback."""
    TOKEN = "token"  # noqa: S105 - a mode's name, not a secret
    """Clients that send `Authorization: Bearer` with METRICS_TOKEN."""


class Metrics:
    """Every metric userql exports, registered in one registry of their own."""

    _instance: ClassVar["Metrics | None"] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(cls) -> "Metrics":
        """This process's metrics, made on first use."""
        if cls._instance is None:
            with cls._lock:
                if cls._instance is None:
                    cls._instance = cls()
        return cls._instance

    def __init__(self) -> None:
        # prometheus-client picks multiprocess mode or not once, when first imported: here,
        # in the worker, after gunicorn.conf.py has named PROMETHEUS_MULTIPROC_DIR. Imported
        # by any module the gunicorn master loads first, it would count in memory instead.
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        # Multiprocess mode has no `_created` series; one process's scrape says the same.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "userql_graphql_requests",
            "GraphQL requests, by operation name, operation type and outcome.",
            ("operation_name", "operation_type", "outcome"),
            registry=registry,
        )
        self.errors = Counter(
            "userql_graphql_errors",
            "Errors in GraphQL responses, by extensions.code.",
            ("code",),
            registry=registry,
        )
        self.duration = Histogram(
            "userql_graphql_request_duration_seconds",
            "GraphQL request latency from arrival to answer, by operation name and type.",
            ("operation_name", "operation_type"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.statements = Histogram(
            "userql_sql_statements_per_request",
            "SQL statements sent to the database per GraphQL request.",
            buckets=STATEMENT_BUCKETS,
            registry=registry,
        )
        self.pool_checked_out = Gauge(
            "userql_db_pool_checked_out_connections",
            "Database connections in use, by engine (writes or reads).",
            ("engine",),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_overflow = Gauge(
            "userql_db_pool_overflow_connections",
            "Connections opened beyond each pool's size, by engine.",
            ("engine",),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.rate_limited = Counter(
            "userql_rate_limit_refusals",
            "Requests refused by a rate limit, by limit.",
            ("limit",),
            registry=registry,
        )
        self.persisted_queries = Counter(
            "userql_persisted_query_lookups",
            "Automatic persisted query lookups by hash, by result (hit or miss).",
            ("result",),
            registry=registry,
        )
        self.document_cache = Counter(
            "userql_document_cache_lookups",
            "Parsed-document cache lookups, by result (hit or miss).",
            ("result",),
            registry=registry,
        )
        self.webhook_calls = Counter(
            "userql_provisioning_webhook_calls",
            "Provisioning webhook calls, by outcome (ok, refused, timeout, unreachable).",
            ("outcome",),
            registry=registry,
        )
        self.webhook_duration = Histogram(
            "userql_provisioning_webhook_duration_seconds",
            "Provisioning webhook latency, by outcome.",
            ("outcome",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        build = Gauge(
            "userql_build_info",
            "Always 1: the versions this process runs.",
            ("version", "python", "strawberry", "graphql_core"),
            multiprocess_mode="max",
            registry=registry,
        )
        build.labels(
            version=version("userql"),
            python=platform.python_version(),
            strawberry=version("strawberry-graphql"),
            graphql_core=version("graphql-core"),
        ).set(1)

    def count_errors(self, codes: Iterable[str]) -> None:
        for code in codes:
            child(self.errors, code if _CODE_SHAPE.fullmatch(code) else OTHER).inc()


# Each labelled metric's children by their label values. The library's own `labels()`
# validates and takes a lock on every call, several times a request; a child, once made,
# is the same object for good, so it is looked up here instead.
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, made once per process."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


class OperationNames:
    """Which operation names get a label value of their own: with a trusted-documents
    manifest, the names its documents define; without one, the first OPERATION_NAME_CAP
    seen by this process."""

    def __init__(self, trusted: Iterable[str] | None = None, cap: int = OPERATION_NAME_CAP):
        self._trusted = None if trusted is None else frozenset(trusted)
        self._seen: set[str] = set()
        self._cap = cap
        self._lock = threading.Lock()

    def label(self, name: str | None) -> str:
        if name is None:
            return ANONYMOUS
        if self._trusted is not None:
            return name if name in self._trusted else OTHER
        if name in self._seen:
            return name
        with self._lock:
            if len(self._seen) >= self._cap:
                return OTHER
            self._seen.add(name)
        return name


def exposition() -> tuple[bytes, str]:
    """The text format of every metric, and its media type: summed over gunicorn's workers
    in multiprocess mode, else this process's own."""
    registry = Metrics.get().registry
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    if os.environ.get(MULTIPROCESS_DIRECTORY):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
