from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from schema.limits import ExposurePolicy, QueryLimits
from schema.operation_log import RequestLog
from services.auth import Principal, TokenService
from services.google import IdTokenVerifier
from services.provisioning import Provisioner
from services.rate_limit import RateLimiter
from services.unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class Context:
    """What a resolver may use: plain values handed over by app.py, never the settings."""

    session_factory: sessionmaker[Session]
    provisioner: Provisioner
    principal: Principal
    """Authenticated once per request, before execution."""
    tokens: TokenService
    google: IdTokenVerifier
    google_signup_enabled: bool
    log: RequestLog
    limits: QueryLimits
    exposure: ExposurePolicy
    rate_limiter: RateLimiter
    client_address: str

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)
