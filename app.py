"""The composition root: builds the collaborators from the settings, once per app, and
registers the HTTP edge (web/). No parsing, no views, no use cases live here."""

from flask import Flask
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix

from db import connections
from db.connections import Databases
from db.migrations import migrations_head
from schema.limits import ExposurePolicy
from schema.root import executable_schema
from services import auth
from services.google import CachingRequest, GoogleIdTokenVerifier
from services.provisioning import NoopProvisioner, Provisioner, WebhookProvisioner
from services.rate_limit import RateLimiter, RedisCounter
from services.shared_redis import SharedRedis
from services.telemetry import Telemetry
from settings import ConfigError, Environment, Settings
from web import errors, graphiql, graphql_view, health, request_log, telemetry
from web.collaborators import Collaborators
from web.persisted import DocumentAdmission


def build_provisioner(settings: Settings, instruments: Telemetry | None = None) -> Provisioner:
    if settings.provisioning_webhook_url is None:
        return NoopProvisioner()
    try:
        return WebhookProvisioner(
            settings.provisioning_webhook_url,
            timeout_seconds=settings.provisioning_timeout_seconds,
            telemetry=instruments,
        )
    except ValueError as error:
        raise ConfigError(f"USER_PROVISIONING_WEBHOOK_URL: {error}") from None


def build_token_service(settings: Settings) -> auth.TokenService:
    try:
        return auth.TokenService(
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.jwt_ttl_seconds,
            leeway_seconds=settings.jwt_leeway_seconds,
            secret=settings.jwt_secret,
            private_key_pem=settings.jwt_private_key_pem,
            public_keys_pem=settings.jwt_public_keys_pem,
        )
    except ValueError as error:
        raise ConfigError(f"JWT settings: {error}") from None


def build_collaborators(
    settings: Settings, databases: Databases, instruments: Telemetry | None = None
) -> Collaborators:
    shared = SharedRedis.from_url(settings.redis_url) if settings.redis_url else None
    instruments = instruments or Telemetry()
    return Collaborators(
        databases=databases,
        provisioner=build_provisioner(settings, instruments),
        tokens=build_token_service(settings),
        google=GoogleIdTokenVerifier(
            client_ids=settings.google_client_ids,
            request=CachingRequest.over_urllib3(instruments),
            certs_url=settings.google_certs_url,
            hosted_domain=settings.google_hosted_domain,
            leeway_seconds=settings.jwt_leeway_seconds,
        ),
        google_signup_enabled=settings.google_signup_enabled,
        session_ttl_seconds=settings.session_ttl_seconds,
        audit_redact_email=settings.audit_redact_email,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        limits=settings.query_limits,
        exposure=ExposurePolicy(
            introspection=settings.introspection, field_suggestions=settings.field_suggestions
        ),
        rate_limiter=RateLimiter(
            dict(settings.rate_limits), shared=None if shared is None else RedisCounter(shared)
        ),
        batch_max=settings.batch_max,
        csrf_require_preflight=settings.csrf_require_preflight,
        development_tokens=settings.graphiql and settings.environment is Environment.DEVELOPMENT,
        documents=DocumentAdmission.kept_in(shared, trusted=settings.trusted_documents),
        telemetry=instruments,
    )


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Flask:
    """The WSGI app. Under gunicorn, each worker calls this after the fork, so every worker
    builds its own engines, and its own trace exporter, and shares no connection with
    another. `tracer_provider` turns tracing on with spans going there instead."""
    settings = settings or Settings.from_env()
    request_log.configure_logging(settings.log_level)
    databases = (
        Databases.given(session_factory)
        if session_factory is not None
        else connections.connect(
            settings.database_url,
            settings.database_read_url,
            settings.database_pool,
            settings.database_wait_seconds,
            request_timeout_seconds=settings.request_timeout_seconds,
            max_lag_seconds=settings.replica_max_lag_seconds,
        )
    )
    instruments = Telemetry.build(settings.tracing, settings.metrics_access, tracer_provider)
    instruments.instrument(databases)
    collaborators = build_collaborators(settings, databases, instruments)
    app = Flask(__name__)
    # Werkzeug answers 413 (as JSON, below) before a larger body is read.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    if proxies := settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    request_log.register(app, request_timeout_seconds=settings.request_timeout_seconds)
    telemetry.register(
        app,
        instruments,
        access=settings.metrics_access,
        token=settings.metrics_token,
        trusted=settings.trusted_documents,
    )
    graphql_view.register(
        app,
        executable_schema(fast_execution=settings.fast_execution, federation=settings.federation),
        collaborators,
        graphiql=settings.graphiql,
        cors_origins=settings.cors_origins,
        cors_allow_credentials=settings.cors_allow_credentials,
    )
    if settings.graphiql:
        graphiql.register(app, collaborators)
    health.register(
        app,
        databases.readiness_factory,
        collaborators.tokens,
        migrations_head(),
        port=settings.health_port,
        drain_seconds=settings.shutdown_drain_seconds,
    )
    errors.register(app)
    return app
