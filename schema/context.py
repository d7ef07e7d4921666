from dataclasses import dataclass, field

from opentelemetry.trace import Tracer

from schema.limits import ExposurePolicy, QueryLimits
from schema.operation_log import RequestLog
from services.auth import Principal, TokenService
from services.google import IdTokenVerifier
from services.provisioning import Provisioner
from services.rate_limit import RateLimiter
from services.unit_of_work import RequestConnection, UnitOfWork


@dataclass(frozen=True, slots=True)
class Context:
    """What a resolver may use: plain values handed over by app.py, never the settings."""

    database: RequestConnection
    provisioner: Provisioner
    principal: Principal
    """Authenticated once per request, before execution."""
    tokens: TokenService
    google: IdTokenVerifier
    google_signup_enabled: bool
    session_ttl_seconds: int
    user_agent: str | None
    """The caller's User-Agent as a session keeps it (see services.sessions.user_agent)."""
    log: RequestLog
    limits: QueryLimits
    exposure: ExposurePolicy
    rate_limiter: RateLimiter
    client_address: str
    tracer: Tracer | None
    """Traces each operation (schema.operation_log), when tracing is on."""
    signed_in: set[int] = field(default_factory=set)
    """Users the caller proved to be during this request (by signing in as them)."""

    def caller_id(self) -> int:
        """The signed-in caller's id, for fields whose rule admits signed-in callers only."""
        if self.principal.user_id is None:
            raise RuntimeError("a field for signed-in callers ran without one")
        return self.principal.user_id

    def is_caller(self, user_id: int) -> bool:
        return user_id == self.principal.user_id or user_id in self.signed_in

    def uow(self) -> UnitOfWork:
        """For services that write."""
        return self.database.unit_of_work()

    def reading(self) -> UnitOfWork:
        """For services that only read: they share the request's read transaction."""
        return self.database.reading()
