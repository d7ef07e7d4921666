"""JSON error bodies, and Flask's error handlers answering with them."""

import json
import logging

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from schema.errors import INTERNAL, INTERNAL_MESSAGE

logger = logging.getLogger("userql")


def error_body(message: str, code: str) -> str:
    return json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    417: "EXPECTATION_FAILED",
    431: "HEADERS_TOO_LARGE",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "SERVICE_UNAVAILABLE",
}
# Seconds a client should wait before retrying while the database is away.
RETRY_AFTER_SECONDS = 5


def json_error(message: str, code: str, status: int) -> Response:
    if (log := g.get("request_log")) is not None:
        log.error_codes.append(code)
    return Response(error_body(message, code), status=status, content_type="application/json")


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = json_error(
            error.description or error.name, CODE_BY_STATUS.get(status, "BAD_REQUEST"), status
        )
        if allowed := getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        logger.exception("unhandled error outside GraphQL execution")
        return json_error(INTERNAL_MESSAGE, INTERNAL, 500)
