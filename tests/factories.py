import uuid

from sqlalchemy.orm import Session, sessionmaker

from db import models
from services import users as user_service
from services.provisioning import NoopProvisioner
from services.unit_of_work import UnitOfWork


def make_user(
    session_factory: sessionmaker[Session],
    *,
    name: str | None = None,
    email: str | None = None,
    role: models.Role = models.Role.USER,
) -> models.User:
    token = uuid.uuid4().hex[:10]
    return user_service.create_user(
        UnitOfWork(session_factory),
        NoopProvisioner(),
        name=name or f"User {token}",
        email=email or f"user-{token}@example.com",
        role=role,
    )


def make_users(session_factory: sessionmaker[Session], count: int) -> list[models.User]:
    return [make_user(session_factory) for _ in range(count)]
