"""The example users that `make run` serves."""

from sqlalchemy.orm import Session, sessionmaker

from db import models
from services import users as user_service
from services.errors import EmailTaken
from services.provisioning import Provisioner
from services.unit_of_work import UnitOfWork

EXAMPLE_USERS = (
    ("Ada Lovelace", "ada@example.com", models.Role.ADMIN),
    ("Grace Hopper", "grace@example.com", models.Role.USER),
    ("Alan Turing", "alan@example.com", models.Role.USER),
    ("Katherine Johnson", "katherine@example.com", models.Role.USER),
)


def seed(session_factory: sessionmaker[Session], provisioner: Provisioner) -> list[str]:
    """Creates the example users that do not exist yet; returns the emails it created."""
    created = []
    for name, email, role in EXAMPLE_USERS:
        try:
            user_service.create_user(
                UnitOfWork(session_factory), provisioner, name=name, email=email, role=role
            )
        except EmailTaken:
            continue
        created.append(email)
    return created
