"""Twenty requests with one Idempotency-Key at once, each on its own connection: one runs,
the others wait at the key's unique index and get its answer."""

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


def test_one_key_twenty_requests_one_change(
    settings: Settings, tokens: TokenService, committing_session_factory: sessionmaker[Session]
) -> None:
    admin = make_user(committing_session_factory, role=models.Role.ADMIN)
    # A slow webhook keeps the first request's transaction open while the others arrive.
    behaviour = Behaviour(status=201, delay_seconds=0.3)
    with stub_server(behaviour) as url:
        configured = replace(settings, provisioning_webhook_url=url)
        app = create_app(configured, session_factory=committing_session_factory)
        start = threading.Barrier(RACERS)
        answers: list[tuple[int, bytes, Any]] = []

        def race() -> None:
            client = authorized(app.test_client(), tokens, admin)
            start.wait()
            response = client.post(
                "/graphql",
                json={
                    "query": CREATE_USER,
                    "variables": {"input": {"name": "Once", "email": "once@x.test"}},
                },
                headers={"Idempotency-Key": "the-one-key"},
            )
            answers.append((response.status_code, response.get_data(), response.get_json()))

        threads = [threading.Thread(target=race) for _ in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(answers) == RACERS
    assert {status for status, _, _ in answers} == {200}
    bodies = {body for _, body, _ in answers}
    assert len(bodies) == 1, bodies  # the first answer, given to every other racer
    (body,) = [json for _, _, json in answers[:1]]
    assert body["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    assert len(behaviour.received) == 1
    with committing_session_factory() as session:
        created = session.scalar(
            select(func.count()).select_from(models.User).where(models.User.email == "once@x.test")
        )
        events = session.scalar(
            select(func.count())
            .select_from(models.AuditEvent)
            .where(models.AuditEvent.actor_id == admin.id)
        )
        keys = session.scalar(select(func.count()).select_from(models.IdempotencyKey))
    assert (created, events, keys) == (1, 1, 1)


def test_one_key_for_different_requests_at_once_one_runs_the_others_are_refused(
    settings: Settings, tokens: TokenService, committing_session_factory: sessionmaker[Session]
) -> None:
    """A client bug: one key, different requests, at once. They share no row, so each runs
    until it writes the key; the first to commit keeps its change, the others' writes are
    rolled back and they get IDEMPOTENCY_KEY_REUSED."""
    admin = make_user(committing_session_factory, role=models.Role.ADMIN)
    racers = 6
    with stub_server(Behaviour(status=201, delay_seconds=0.2)) as url:
        configured = replace(settings, provisioning_webhook_url=url)
        app = create_app(configured, session_factory=committing_session_factory)
        start = threading.Barrier(racers)
        answers: list[tuple[int, Any]] = []

        def race(number: int) -> None:
            client = authorized(app.test_client(), tokens, admin)
            start.wait()
            response = client.post(
                "/graphql",
                json={
                    "query": CREATE_USER,
                    "variables": {"input": {"name": "Each", "email": f"each-{number}@x.test"}},
                },
                headers={"Idempotency-Key": "one-key-many-requests"},
            )
            answers.append((response.status_code, response.get_json()))

        threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [422] * (racers - 1), answers
    refusals = {
        body["errors"][0]["extensions"]["code"] for status, body in answers if status == 422
    }
    assert refusals == {"IDEMPOTENCY_KEY_REUSED"}
    with committing_session_factory() as session:
        created = session.scalars(
            select(models.User.email).where(models.User.email.like("each-%"))
        ).all()
        events = session.scalar(
            select(func.count())
            .select_from(models.AuditEvent)
            .where(models.AuditEvent.actor_id == admin.id)
        )
        keys = session.scalar(select(func.count()).select_from(models.IdempotencyKey))
    (winner,) = [body for status, body in answers if status == 200]
    assert created == [winner["data"]["createUser"]["user"]["email"]]
    assert (events, keys) == (1, 1)
