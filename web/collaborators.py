"""What the HTTP edge is handed by the composition root (app.py)."""

from dataclasses import dataclass

from db.connections import Databases
from schema.limits import ExposurePolicy, QueryLimits
from services import auth
from services.google import IdTokenVerifier
from services.provisioning import Provisioner
from services.rate_limit import RateLimiter
from services.telemetry import Telemetry
from web.persisted import DocumentAdmission


@dataclass(frozen=True, slots=True)
class Collaborators:
    """Everything a request needs besides the request, built once per app."""

    databases: Databases
    provisioner: Provisioner
    tokens: auth.TokenService
    google: IdTokenVerifier
    google_signup_enabled: bool
    session_ttl_seconds: int
    audit_redact_email: bool
    idempotency_ttl_seconds: int
    limits: QueryLimits
    exposure: ExposurePolicy
    rate_limiter: RateLimiter
    batch_max: int
    csrf_require_preflight: bool
    development_tokens: bool
    """GraphiQL's role switcher may mint short-lived tokens (development only)."""
    documents: DocumentAdmission
    telemetry: Telemetry
