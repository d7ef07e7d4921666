"""/livez, /readyz and the JWKS document."""

import json

from flask import Flask, Response
from sqlalchemy.orm import Session, sessionmaker

from services import auth
from services.health import check_readiness
from services.unit_of_work import UnitOfWork


def register(
    app: Flask,
    session_factory: sessionmaker[Session],
    tokens: auth.TokenService,
    *,
    expected_revision: str,
) -> None:
    @app.get("/livez")
    def livez() -> Response:
        return Response(json.dumps({"status": "ok"}), content_type="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        readiness = check_readiness(
            UnitOfWork(session_factory), expected_revision=expected_revision
        )
        if readiness.ready:
            ready = {"status": "ready", "revision": expected_revision}
            return Response(json.dumps(ready), content_type="application/json")
        unavailable = {"status": "unavailable", "reason": readiness.reason}
        return Response(json.dumps(unavailable), status=503, content_type="application/json")

    jwks_body = json.dumps(tokens.jwks())

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        response = Response(jwks_body, content_type="application/json")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response
