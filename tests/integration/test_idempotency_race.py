"""Requests with one Idempotency-Key at once, each on its own connection. The same request
twenty times: one runs, the others wait at the row it writes (the new user's email) and get
its answer. Different requests: one runs, the others' writes are rolled back and they are
refused."""

import threading
from dataclasses import replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import TokenService
from settings import Settings
from tests.factories import make_user
from tests.graphql import CREATE_USER, authorized
from tests.http_stub import Behaviour, stub_server

RACERS = 20


def race(
    settings: Settings,
    tokens: TokenService,
    session_factory: sessionmaker[Session],
    admin: models.User,
    behaviour: Behaviour,
    emails: list[str],
    key: str,
) -> list[tuple[int, bytes, Any]]:
    """createUser of each email at once, all with `key`: each answer's status, body and JSON.
    A slow webhook keeps the first request's transaction open while the others arrive."""
    with stub_server(behaviour) as url:
        configured = replace(settings, provisioning_webhook_url=url)
        app = create_app(configured, session_factory=session_factory)
        start = threading.Barrier(len(emails))
        answers: list[tuple[int, bytes, Any]] = []

        def send(email: str) -> None:
            client = authorized(app.test_client(), tokens, admin)
            start.wait()
            response = client.post(
                "/graphql",
                json={"query": CREATE_USER, "variables": {"input": {"name": "R", "email": email}}},
                headers={"Idempotency-Key": key},
            )
            answers.append((response.status_code, response.get_data(), response.get_json()))

        threads = [threading.Thread(target=send, args=(email,)) for email in emails]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return answers


def kept(
    session_factory: sessionmaker[Session], admin: models.User, emails: list[str]
) -> tuple[list[str], int, int]:
    """Which of the emails have a user, the admin's audit events, and the stored keys."""
    with session_factory() as session:
        created = session.scalars(
            select(models.User.email).where(models.User.email.in_(emails))
        ).all()
        events = session.scalar(
            select(func.count())
            .select_from(models.AuditEvent)
            .where(models.AuditEvent.actor_id == admin.id)
        )
        keys = session.scalar(select(func.count()).select_from(models.IdempotencyKey))
    return list(created), events or 0, keys or 0


def test_one_key_twenty_requests_one_change(
    settings: Settings, tokens: TokenService, committing_session_factory: sessionmaker[Session]
) -> None:
    admin = make_user(committing_session_factory, role=models.Role.ADMIN)
    behaviour = Behaviour(status=201, delay_seconds=0.3)
    emails = ["once@x.test"] * RACERS
    answers = race(
        settings, tokens, committing_session_factory, admin, behaviour, emails, "the-one-key"
    )

    assert len(answers) == RACERS
    assert {status for status, _, _ in answers} == {200}
    bodies = {body for _, body, _ in answers}
    assert len(bodies) == 1, bodies  # the first answer, given to every other racer
    (body,) = [json for _, _, json in answers[:1]]
    assert body["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    assert len(behaviour.received) == 1
    assert kept(committing_session_factory, admin, emails) == (["once@x.test"], 1, 1)


def test_one_key_for_different_requests_at_once_one_runs_the_others_are_refused(
    settings: Settings, tokens: TokenService, committing_session_factory: sessionmaker[Session]
) -> None:
    """A client bug: one key, different requests, at once. They share no row, so each runs
    until it writes the key; the first to commit keeps its change, the others' writes are
    rolled back and they get IDEMPOTENCY_KEY_REUSED."""
    admin = make_user(committing_session_factory, role=models.Role.ADMIN)
    behaviour = Behaviour(status=201, delay_seconds=0.2)
    emails = [f"each-{number}@x.test" for number in range(6)]
    answers = race(
        settings, tokens, committing_session_factory, admin, behaviour, emails, "one-key-many"
    )

    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] + [422] * (len(emails) - 1), answers
    refusals = {
        json["errors"][0]["extensions"]["code"] for status, _, json in answers if status == 422
    }
    assert refusals == {"IDEMPOTENCY_KEY_REUSED"}
    (winner,) = [json for status, _, json in answers if status == 200]
    assert kept(committing_session_factory, admin, emails) == (
        [winner["data"]["createUser"]["user"]["email"]],
        1,
        1,
    )
