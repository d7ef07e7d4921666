"""Request ids, JSON log lines, and the one log line per request."""

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any, cast

import orjson
from flask import Flask, Request, Response, g, request
from flask.ctx import _AppCtxGlobals

from db import deadline
from schema.errors import INTERNAL
from schema.operation_log import RequestLog
from web.arrival import ARRIVAL
from web.errors import RETRY_AFTER_SECONDS, json_error

request_logger = logging.getLogger("userql.request")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# Ids we echo back and log: short, and nothing a log viewer or a header could misread.
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_LOG_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
# Asked every few seconds by orchestrators and scrapers: their lines go at DEBUG.
POLLED_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if (request_id := _request_id.get()) is not None:
            entry["request_id"] = request_id
        entry.update(
            (key, value) for key, value in vars(record).items() if key not in _LOG_RECORD_FIELDS
        )
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


JsonLogFormatter.converter = time.gmtime


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stdout as it is when the record is emitted, even if it was replaced."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging(level: str) -> None:
    """JSON lines on stdout from every logger; idempotent, so each app factory may call it."""
    root = logging.getLogger()
    root.setLevel(level)
    # What a record would learn of its thread, process name and calling line, no line prints
    # (JsonLogFormatter writes none of them): the logging HOWTO's "Optimization" switches.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    if not any(isinstance(handler, _StdoutHandler) for handler in root.handlers):
        handler = _StdoutHandler(sys.stdout)
        handler.setFormatter(JsonLogFormatter())
        root.addHandler(handler)


def current_request() -> Request:
    """The request itself: each attribute read through the `flask.request` proxy looks the
    request up again, and a GraphQL request reads some thirty."""
    current: Request = cast(Any, request)._get_current_object()
    return current


def current_globals() -> _AppCtxGlobals:
    """`flask.g` itself, for the same reason as current_request."""
    current: _AppCtxGlobals = cast(Any, g)._get_current_object()
    return current


def register(app: Flask, *, request_timeout_seconds: float) -> None:
    @app.before_request
    def start() -> Response | None:
        incoming = current_request().headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID_SHAPE.fullmatch(incoming) else uuid.uuid4().hex
        globals_ = current_globals()
        globals_.request_id = request_id
        globals_.request_id_token = _request_id.set(request_id)
        globals_.request_log = RequestLog()
        # From the arrival under gunicorn (web/worker.py): queueing for a thread counts.
        arrived = ARRIVAL.get()
        globals_.started = time.monotonic() if arrived is None else arrived
        globals_.deadline_token = deadline.start(request_timeout_seconds, since=globals_.started)
        if time.monotonic() - globals_.started >= request_timeout_seconds:
            response = json_error(
                "The server was too busy to start this request in time; try again.",
                "REQUEST_TIMEOUT",
                503,
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        return None

    @app.after_request
    def finish(response: Response) -> Response:
        current, globals_ = current_request(), current_globals()
        response.headers["X-Request-ID"] = globals_.request_id
        log: RequestLog = globals_.request_log
        method, path, status = current.method, current.path, response.status_code
        level = _request_log_level(path, status, log.error_codes)
        request_logger.log(
            level,
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.monotonic() - globals_.started) * 1000, 2),
                "operation_name": log.operation_name,
                "operation_type": log.operation_type,
                "principal_id": log.principal_id,
                "outcome": "error" if log.error_codes or status >= 400 else "ok",
                "error_codes": log.error_codes,
                **(
                    {}
                    if log.trace_id is None
                    else {"trace_id": log.trace_id, "span_id": log.span_id}
                ),
            },
        )
        return response

    @app.teardown_request
    def forget(_error: BaseException | None) -> None:
        globals_ = current_globals()
        if (token := globals_.pop("request_id_token", None)) is not None:
            _request_id.reset(token)
        if (budget := globals_.pop("deadline_token", None)) is not None:
            deadline.end(budget)


def _request_log_level(path: str, status: int, error_codes: list[str]) -> int:
    if INTERNAL in error_codes or status == 500:
        return logging.ERROR
    if status >= 500 or "SERVICE_UNAVAILABLE" in error_codes:
        return logging.WARNING
    return logging.DEBUG if path in POLLED_PATHS else logging.INFO
