"""/livez, /readyz, the JWKS and the discovery document that points at it; and the health
port, which answers /livez and /readyz from a thread of its own in each gunicorn worker
(web/worker.py), so that probes are answered while every request thread waits on a slow
database or a slow client. A worker that drains before it stops (SHUTDOWN_DRAIN_SECONDS)
says so here: /readyz answers 503 draining on both ports while requests are still served."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from flask import Flask, Response, url_for
from sqlalchemy.orm import Session, sessionmaker

from services import auth
from services.health import Readiness, ReadinessProbe, check_readiness
from services.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)
EXTENSION = "userql.health"
LIVE = {"status": "ok"}
# The claims our access tokens carry (services/auth.py), for verifiers that map them.
TOKEN_CLAIMS = ("sub", "roles", "iat", "exp", "iss", "aud", "jti", "sid")


DRAINING = {"status": "draining", "reason": "the server is shutting down"}


def readiness_body(readiness: Readiness, revision: str) -> tuple[int, dict[str, Any]]:
    if readiness.ready:
        return 200, {"status": "ready", "revision": revision}
    return 503, {"status": "unavailable", "reason": readiness.reason}


class Health:
    """What the health endpoints answer from, kept on the app for the health port and for
    the worker, which reads `drain_seconds` and calls begin_draining() on SIGTERM."""

    def __init__(
        self, probe: ReadinessProbe, *, revision: str, port: int, drain_seconds: float = 0.0
    ) -> None:
        self.probe = probe
        self.revision = revision
        self.port = port
        self.drain_seconds = drain_seconds
        self.draining = False

    def begin_draining(self) -> None:
        # One plain attribute, written from a signal handler and read by any thread: no lock
        # that the interrupted thread might be holding.
        self.draining = True

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/livez":
            return 200, LIVE
        if path == "/readyz":
            if self.draining:
                return 503, DRAINING
            return readiness_body(self.probe.current(), self.revision)
        return 404, {"errors": [{"message": "Not found.", "extensions": {"code": "NOT_FOUND"}}]}


def register(
    app: Flask,
    session_factory: sessionmaker[Session],
    tokens: auth.TokenService,
    revision: str,
    *,
    port: int,
    drain_seconds: float = 0.0,
) -> None:
    """/livez, /readyz (the database at `revision`, checked through `session_factory`), the
    JWKS and its discovery document; the health port answers from the same Health, kept on
    the app, which also hands the worker its `drain_seconds`."""
    probe = ReadinessProbe(
        lambda: check_readiness(UnitOfWork(session_factory), expected_revision=revision)
    )
    health = app.extensions[EXTENSION] = Health(
        probe, revision=revision, port=port, drain_seconds=drain_seconds
    )

    @app.get("/livez")
    def livez() -> Response:
        return _json(*health.answer("/livez"))

    @app.get("/readyz")
    def readyz() -> Response:
        return _json(*health.answer("/readyz"))

    jwks_body = json.dumps(tokens.jwks())

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        response = Response(jwks_body, content_type="application/json")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    # Metadata for verifying our tokens, not a full OpenID Provider: there is no authorization
    # endpoint and no ID token, so only the fields that hold for userql are given.
    discovery = {
        "subject_types_supported": ["public"],
        # Our access tokens' algorithm; verifiers read it here to pin the one they accept.
        "id_token_signing_alg_values_supported": [tokens.algorithm],
        "claims_supported": list(TOKEN_CLAIMS),
    }

    @app.get("/.well-known/openid-configuration")
    def openid_configuration() -> Response:
        # Built per request so that each name the service is reached by points at its own
        # keys; the scheme is the proxy's only behind TRUSTED_PROXIES (ProxyFix in app.py).
        body = {
            "issuer": tokens.issuer,
            "jwks_uri": url_for("jwks", _external=True),
            **discovery,
        }
        response = Response(json.dumps(body), content_type="application/json")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class _HealthServer(ThreadingHTTPServer):
    # Every worker of one gunicorn listens on the health port; the kernel spreads probes.
    allow_reuse_port = True
    daemon_threads = True


def health_of(app: Any) -> Health | None:
    """The app's Health; None for an app that has none (not one create_app built)."""
    extensions = getattr(app, "extensions", None)
    found = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
    return found if isinstance(found, Health) else None


def serve_health_port(app: Flask, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:  # noqa: S104
    """Starts answering /livez and /readyz on the app's health port, in a daemon thread of
    this process; None when the port is 0 (off) or the app has no health endpoints."""
    found = health_of(app)
    if found is None or found.port == 0:
        return None
    health = found

    class Handler(BaseHTTPRequestHandler):
        # A probe that sends nothing must not hold a thread for long.
        timeout = 2

        def do_GET(self) -> None:
            status, body = health.answer(self.path.partition("?")[0])
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # probes every few seconds are not worth a line each

    try:
        server = _HealthServer((host, health.port), Handler)
    except OSError as error:
        # The API itself still serves; the orchestrator's probes of this port will say so.
        logger.error("cannot serve the health port %d: %s", health.port, error)
        return None
    threading.Thread(target=server.serve_forever, name="userql-health", daemon=True).start()
    logger.info("health endpoints on port %d", health.port)
    return server
