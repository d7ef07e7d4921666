"""GraphiQL, served by userql itself, and its role switcher's development tokens."""

import functools
import hashlib
import json
import posixpath
from importlib.resources import files
from pathlib import Path

from flask import Flask, Response, request, send_from_directory
from werkzeug.exceptions import NotFound

from db import models
from services import auth
from services.unit_of_work import UnitOfWork
from web.collaborators import Collaborators
from web.errors import json_error

GRAPHIQL_DIR = Path(str(files("schema") / "graphiql"))
GRAPHIQL_ASSETS = "/graphiql"
# Only these files are served; the folder also holds the build's package.json and script.
_GRAPHIQL_OWN_FILES = ("userql-graphiql.js", "userql-graphiql.css")
# Nothing from another origin, no inline script, no eval: what the page needs and no more.
GRAPHIQL_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DEVELOPMENT_TOKEN_TTL_SECONDS = 900


def _content_version(name: str) -> str:
    return hashlib.sha256((GRAPHIQL_DIR / name).read_bytes()).hexdigest()[:12]


@functools.cache
def _graphiql_html() -> str:
    html = (GRAPHIQL_DIR / "index.html").read_text(encoding="utf-8")
    # Our own files change with userql: a content hash in the URL lets them be cached forever too.
    for name in _GRAPHIQL_OWN_FILES:
        html = html.replace(f"%ASSETS%/{name}", f"%ASSETS%/{name}?v={_content_version(name)}")
    return html.replace("%ASSETS%", GRAPHIQL_ASSETS)


def graphiql_page(*, with_role_switcher: bool) -> Response:
    html = _graphiql_html().replace("%ENDPOINT%", "/graphql")
    html = html.replace("%TOKEN_URL%", f"{GRAPHIQL_ASSETS}/token" if with_role_switcher else "")
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = GRAPHIQL_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


def register(app: Flask, collaborators: Collaborators) -> None:
    """The page's assets; in development, also the role switcher's tokens."""

    @app.get(f"{GRAPHIQL_ASSETS}/<path:filename>")
    def graphiql_asset(filename: str) -> Response:
        # Normalized first: "vendor/../package.json" must not pass for a vendored file.
        normalized = posixpath.normpath(filename)
        if not (normalized.startswith("vendor/") or normalized in _GRAPHIQL_OWN_FILES):
            raise NotFound()
        # Vendored paths carry their version and ours a content hash: they never change.
        response = send_from_directory(GRAPHIQL_DIR, filename, max_age=31_536_000)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    if collaborators.development_tokens:
        _register_development_tokens(app, collaborators)


def _register_development_tokens(app: Flask, collaborators: Collaborators) -> None:
    """GraphiQL's role switcher: a fresh, short-lived token for a USER or an ADMIN."""

    @app.post(f"{GRAPHIQL_ASSETS}/token")
    def development_token() -> Response:
        payload = request.get_json(silent=True) if request.is_json else None
        role_name = payload.get("role") if isinstance(payload, dict) else None
        if role_name not in ("USER", "ADMIN"):
            return json_error(
                'Send {"role": "USER"} or {"role": "ADMIN"} as JSON.', "BAD_REQUEST", 400
            )
        issued, email = auth.issue_development_token(
            UnitOfWork(collaborators.databases.session_factory),
            collaborators.provisioner,
            collaborators.tokens,
            role=models.Role(role_name),
            ttl_seconds=DEVELOPMENT_TOKEN_TTL_SECONDS,
        )
        body = {"token": issued.token, "expiresAt": issued.expires_at.isoformat(), "email": email}
        return Response(json.dumps(body), content_type="application/json")
