from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services import users as user_service
from services.errors import ProvisioningError
from services.provisioning import NewUser, WebhookProvisioner
from services.unit_of_work import UnitOfWork
from tests.http_stub import Behaviour, stub_server

NEW_USER = NewUser(
    id=7,
    name="Ada",
    email="ada@example.com",
    role="ADMIN",
    created_at=datetime(2026, 1, 2, tzinfo=UTC),
)


def test_the_webhook_receives_the_new_user_as_json() -> None:
    behaviour = Behaviour(status=201)
    with stub_server(behaviour) as url:
        WebhookProvisioner(url, timeout_seconds=2).provision(NEW_USER)
    [request] = behaviour.received
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {
        "event": "user.created",
        "id": "7",
        "name": "Ada",
        "email": "ada@example.com",
        "role": "ADMIN",
        "createdAt": "2026-01-02T00:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        (Behaviour(status=500), r"refused the user \(HTTP 500\)"),
        (Behaviour(status=409), r"refused the user \(HTTP 409\)"),
        (Behaviour(delay_seconds=1.0), "did not answer in time"),
    ],
)
def test_a_refusal_or_a_timeout_is_a_provisioning_error(behaviour: Behaviour, message: str) -> None:
    with stub_server(behaviour) as url, pytest.raises(ProvisioningError, match=message):
        WebhookProvisioner(url, timeout_seconds=0.2).provision(NEW_USER)


def test_an_unreachable_service_is_a_provisioning_error() -> None:
    with stub_server(Behaviour()) as url:
        pass  # the server is closed again: nothing listens on the port now
    with pytest.raises(ProvisioningError, match="could not be reached"):
        WebhookProvisioner(url, timeout_seconds=1).provision(NEW_USER)


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookProvisioner("ftp://example.com/hook", timeout_seconds=1)


def test_a_timed_out_webhook_rolls_the_user_back(session_factory: sessionmaker[Session]) -> None:
    with stub_server(Behaviour(delay_seconds=1.0)) as url:
        provisioner = WebhookProvisioner(url, timeout_seconds=0.2)
        with pytest.raises(ProvisioningError):
            user_service.create_user(
                UnitOfWork(session_factory), provisioner, name="Slow", email="slow@example.com"
            )
    assert user_service.count_users(UnitOfWork(session_factory)) == 0
