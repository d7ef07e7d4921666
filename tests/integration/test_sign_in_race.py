from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import models
from services import google
from services.auth import TokenService
from services.errors import EmailTaken
from services.google import GoogleIdentity, sign_in_with_google
from services.provisioning import NoopProvisioner, Provisioner
from services.sessions import SessionTokens
from services.unit_of_work import UnitOfWork
from tests.factories import make_user


class FixedVerifier:
    def verify(self, token: str) -> GoogleIdentity:
        return GoogleIdentity(email="twin@example.com", name="Twin")


def _sign_in(session_factory: sessionmaker[Session], tokens: TokenService) -> SessionTokens:
    return sign_in_with_google(
        UnitOfWork(session_factory),
        NoopProvisioner(),
        FixedVerifier(),
        tokens,
        id_token="unused",
        signup_enabled=True,
        user_agent=None,
        session_ttl_seconds=3600,
    )


def test_a_concurrent_first_sign_in_finds_the_user_the_other_created(
    session_factory: sessionmaker[Session], tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lose_the_race(uow: UnitOfWork, provisioner: Provisioner, **kwargs: Any) -> models.User:
        make_user(session_factory, name="Twin", email="twin@example.com")
        raise EmailTaken("twin@example.com")

    monkeypatch.setattr(google, "create_user", lose_the_race)
    signed_in = _sign_in(session_factory, tokens)
    assert signed_in.user.email == "twin@example.com"
    assert tokens.verify(signed_in.access.token).user_id == signed_in.user.id


def test_an_email_taken_without_a_user_is_not_hidden(
    session_factory: sessionmaker[Session], tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(uow: UnitOfWork, provisioner: Provisioner, **kwargs: Any) -> models.User:
        raise EmailTaken("twin@example.com")

    monkeypatch.setattr(google, "create_user", refuse)
    with pytest.raises(EmailTaken):
        _sign_in(session_factory, tokens)
