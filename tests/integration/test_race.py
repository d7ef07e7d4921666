import threading
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services import users as user_service
from services.auth import TokenService
from services.errors import EmailTaken
from services.provisioning import NoopProvisioner
from services.unit_of_work import UnitOfWork
from settings import Settings
from tests.factories import make_user
from tests.graphql import CREATE_USER, authorized
from tests.http_stub import Behaviour, stub_server

RACERS = 6


def test_racing_requests_create_exactly_one_user(
    settings: Settings, tokens: TokenService, committing_session_factory: sessionmaker[Session]
) -> None:
    admin = make_user(committing_session_factory, role=models.Role.ADMIN)
    # A slow provisioning call keeps each transaction open, so the racers overlap.
    with stub_server(Behaviour(delay_seconds=0.1)) as url:
        configured = replace(settings, provisioning_webhook_url=url)
        app = create_app(configured, session_factory=committing_session_factory)
        client = authorized(app.test_client(), tokens, admin)
        start = threading.Barrier(RACERS)
        answers: list[Any] = []

        def race(index: int) -> None:
            start.wait()
            email = "Racer@Example.com" if index % 2 else "racer@example.com"
            response = client.post(
                "/graphql",
                json={"query": CREATE_USER, "variables": {"input": {"name": "R", "email": email}}},
            )
            answers.append((response.status_code, response.get_json()))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert [status for status, _ in answers] == [200] * RACERS
    kinds = sorted(body["data"]["createUser"]["__typename"] for _, body in answers)
    assert kinds == ["CreateUserSuccess"] + ["EmailAlreadyRegistered"] * (RACERS - 1)
    with committing_session_factory() as session:
        emails = session.scalars(select(models.User.email).where(models.User.id != admin.id)).all()
    assert emails == ["racer@example.com"]


def test_the_unique_index_refuses_a_duplicate_in_any_letter_case(
    session_factory: sessionmaker[Session],
) -> None:
    make_user(session_factory, email="late@example.com")
    with pytest.raises(EmailTaken):
        user_service.create_user(
            UnitOfWork(session_factory), NoopProvisioner(), name="Late", email="LATE@example.com"
        )
    assert user_service.count_users(UnitOfWork(session_factory)) == 1


LAST_ADMIN_RACERS = 20
DEMOTE = """mutation($id: ID!) { updateUser(id: $id, input: {role: USER}) { __typename } }"""
DEACTIVATE = """mutation($id: ID!) { deactivateUser(id: $id) { __typename } }"""


def test_two_admins_removing_each_other_at_once_leave_one(
    settings: Settings, tokens: TokenService, committing_session_factory: sessionmaker[Session]
) -> None:
    first = make_user(committing_session_factory, role=models.Role.ADMIN)
    second = make_user(committing_session_factory, role=models.Role.ADMIN)
    app = create_app(settings, session_factory=committing_session_factory)
    start = threading.Barrier(LAST_ADMIN_RACERS)
    answers: list[tuple[int, Any]] = []

    def race(index: int) -> None:
        actor, target = (first, second) if index % 2 else (second, first)
        client = authorized(app.test_client(), tokens, actor)
        query = DEMOTE if index % 4 < 2 else DEACTIVATE
        start.wait()
        response = client.post(
            "/graphql", json={"query": query, "variables": {"id": str(target.id)}}
        )
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(LAST_ADMIN_RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Each answer is a result or a refusal a client can act on; never a 500.
    assert len(answers) == LAST_ADMIN_RACERS
    for status, body in answers:
        assert status in (200, 401), body
        for error in body.get("errors") or ():
            assert error["extensions"]["code"] in ("UNAUTHENTICATED", "FORBIDDEN"), body
    with committing_session_factory() as session:
        admins = session.scalars(
            select(models.User.id).where(
                models.User.role == models.Role.ADMIN, models.User.deactivated_at.is_(None)
            )
        ).all()
    assert len(admins) == 1
