from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import models
from services import users as user_service
from services.errors import EmailTaken, ProvisioningError
from services.provisioning import NewUser, NoopProvisioner, RemovedUser
from services.unit_of_work import UnitOfWork
from tests.factories import make_user, make_users


class CountingUnitOfWork(UnitOfWork):
    commits = 0

    def commit(self) -> None:
        self.commits += 1
        super().commit()


class RefusingProvisioner:
    def __init__(self) -> None:
        self.seen: list[NewUser] = []

    def provision(self, user: NewUser) -> None:
        self.seen.append(user)
        raise ProvisioningError("refused")

    def deprovision(self, user: RemovedUser) -> None:
        raise ProvisioningError("refused")


def count(session_factory: sessionmaker[Session]) -> int:
    return user_service.count_users(UnitOfWork(session_factory))


def test_each_test_starts_with_no_users(session_factory: sessionmaker[Session]) -> None:
    assert count(session_factory) == 0
    make_user(session_factory, email="same@example.com")


def test_and_the_next_one_too(session_factory: sessionmaker[Session]) -> None:
    assert count(session_factory) == 0
    make_user(session_factory, email="same@example.com")


def test_create_user_normalizes_and_commits_once(session_factory: sessionmaker[Session]) -> None:
    uow = CountingUnitOfWork(session_factory)
    before = datetime.now(UTC) - timedelta(seconds=1)
    user = user_service.create_user(
        uow, NoopProvisioner(), name="  Ada Lovelace ", email=" Ada@Example.COM "
    )
    assert uow.commits == 1
    assert (user.name, user.email, user.role) == (
        "Ada Lovelace",
        "ada@example.com",
        models.Role.USER,
    )
    stored = user_service.get_user(UnitOfWork(session_factory), user_id=user.id)
    assert stored is not None
    assert stored.email == "ada@example.com"
    assert stored.created_at.tzinfo is UTC
    assert stored.created_at == user.created_at  # microseconds survive on every backend
    assert before < stored.created_at <= datetime.now(UTC)
    assert stored.updated_at == stored.created_at


def test_a_four_byte_character_round_trips(session_factory: sessionmaker[Session]) -> None:
    user = make_user(session_factory, name="Ada 🚀 Lovelace")
    stored = user_service.get_user(UnitOfWork(session_factory), user_id=user.id)
    assert stored is not None
    assert stored.name == "Ada 🚀 Lovelace"


def test_updated_at_moves_on_update(session_factory: sessionmaker[Session]) -> None:
    user = make_user(session_factory)
    with UnitOfWork(session_factory) as uow:
        stored = uow.session.get(models.User, user.id)
        assert stored is not None
        stored.name = "Renamed"
        uow.commit()
        assert stored.updated_at > stored.created_at


@pytest.mark.parametrize("spelling", ["dup@example.com", "DUP@example.com", " Dup@Example.Com"])
def test_a_taken_email_in_any_case_is_a_domain_error(
    session_factory: sessionmaker[Session], spelling: str
) -> None:
    make_user(session_factory, email="dup@example.com")
    with pytest.raises(EmailTaken) as raised:
        make_user(session_factory, email=spelling)
    assert raised.value.email == "dup@example.com"
    assert count(session_factory) == 1


def test_a_refused_provisioning_leaves_no_row(session_factory: sessionmaker[Session]) -> None:
    make_user(session_factory)
    provisioner = RefusingProvisioner()
    uow = CountingUnitOfWork(session_factory)
    with pytest.raises(ProvisioningError):
        user_service.create_user(uow, provisioner, name="Grace", email="grace@example.com")
    assert uow.commits == 0
    # The provisioner saw the written row, id included, before the rollback.
    assert provisioner.seen[0].id > 0
    assert provisioner.seen[0].email == "grace@example.com"
    assert count(session_factory) == 1
    # The email is free again.
    make_user(session_factory, email="grace@example.com")


def test_get_user_returns_none_for_an_unknown_id(session_factory: sessionmaker[Session]) -> None:
    assert user_service.get_user(UnitOfWork(session_factory), user_id=12345) is None


def test_list_users_pages_by_id(session_factory: sessionmaker[Session]) -> None:
    ids = [user.id for user in make_users(session_factory, 5)]
    first = user_service.list_users(UnitOfWork(session_factory), first=2, with_total=True)
    assert [u.id for u in first.users] == ids[:2]
    assert first.has_next_page
    assert first.total_count == 5
    rest = user_service.list_users(UnitOfWork(session_factory), first=3, after_id=ids[1])
    assert [u.id for u in rest.users] == ids[2:]
    assert not rest.has_next_page
    assert rest.total_count is None
    empty = user_service.list_users(UnitOfWork(session_factory), first=3, after_id=ids[-1])
    assert (empty.users, empty.has_next_page) == ([], False)


@pytest.mark.parametrize("first", [0, -1, user_service.MAX_PAGE_SIZE + 1])
def test_list_users_caps_the_page_size(session_factory: sessionmaker[Session], first: int) -> None:
    with pytest.raises(ValueError, match="first must be between 1 and 100"):
        user_service.list_users(UnitOfWork(session_factory), first=first)


def test_a_read_only_unit_of_work_refuses_to_write(
    session_factory: sessionmaker[Session],
) -> None:
    # A write given a reader would otherwise vanish with the shared read transaction.
    with pytest.raises(RuntimeError, match="read-only"):
        user_service.create_user(
            UnitOfWork(session_factory, read_only=True),
            NoopProvisioner(),
            name="Reader",
            email="reader@example.com",
        )
    assert count(session_factory) == 0
