from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from db import models
from schema.types.pagination import encode_cursor
from tests.factories import make_user, make_users
from tests.graphql import gql

USERS = """
query Users($first: Int, $after: String) {
  users(first: $first, after: $after) {
    totalCount
    edges { cursor node { id name email role createdAt updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


def test_the_readme_query(
    user_client: FlaskClient, member: models.User, session_factory: sessionmaker[Session]
) -> None:
    make_users(session_factory, 2)
    body = gql(user_client, "{ users(first: 2) { totalCount edges { node { id name } } } }")
    users = body["data"]["users"]
    assert users["totalCount"] == 3
    assert users["edges"][0]["node"] == {"id": str(member.id), "name": "Member"}
    assert len(users["edges"]) == 2


def test_walking_every_page_by_cursor(
    admin_client: FlaskClient, admin: models.User, session_factory: sessionmaker[Session]
) -> None:
    created = [admin, *make_users(session_factory, 6)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        users = gql(admin_client, USERS, first=3, after=after)["data"]["users"]
        pages += 1
        assert users["totalCount"] == 7
        seen += [edge["node"]["id"] for edge in users["edges"]]
        assert users["pageInfo"]["endCursor"] == users["edges"][-1]["cursor"]
        if not users["pageInfo"]["hasNextPage"]:
            break
        after = users["pageInfo"]["endCursor"]
    assert seen == [str(user.id) for user in created]
    assert pages == 3


def test_the_default_page_is_twenty(
    admin_client: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    make_users(session_factory, 20)
    users = gql(admin_client, "{ users { edges { node { id } } pageInfo { hasNextPage } } }")
    assert len(users["data"]["users"]["edges"]) == 20
    assert users["data"]["users"]["pageInfo"]["hasNextPage"] is True
    # null is the same as leaving first out
    nulled = gql(admin_client, USERS, first=None)["data"]["users"]
    assert len(nulled["edges"]) == 20


def test_a_page_past_the_end(user_client: FlaskClient, member: models.User) -> None:
    users = gql(user_client, USERS, after=encode_cursor(member.id))["data"]["users"]
    assert users == {
        "totalCount": 1,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


def test_total_count_behind_a_fragment(
    user_client: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    make_users(session_factory, 1)
    body = gql(
        user_client,
        """
        { users(first: 1) { ...Counted ... on UserConnection { inline: totalCount } } }
        fragment Counted on UserConnection { totalCount }
        """,
    )
    assert body["data"]["users"] == {"totalCount": 2, "inline": 2}


def test_a_page_size_out_of_range_is_a_clear_error(user_client: FlaskClient) -> None:
    for first in (0, 101, -5):
        body = gql(user_client, USERS, first=first, expect_errors=True)
        [error] = body["errors"]
        assert error["message"] == "Invalid argument. first: Must be between 1 and 100."
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["fields"] == [
            {"path": ["first"], "message": "Must be between 1 and 100.", "code": "OUT_OF_RANGE"}
        ]
        assert body["data"] is None


def test_a_malformed_cursor_is_a_clear_error(user_client: FlaskClient) -> None:
    for cursor in ("garbage", "", encode_cursor(1)[:-2] + "!!", "dXNlcjotMQ=="):
        body = gql(user_client, USERS, after=cursor, expect_errors=True)
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["fields"][0]["code"] == "INVALID_CURSOR"


def test_user_by_id(admin_client: FlaskClient, session_factory: sessionmaker[Session]) -> None:
    user = make_user(session_factory, name="Grace", email="grace@example.com")
    body = gql(admin_client, "query($id: ID!) { user(id: $id) { id name email role } }", id=user.id)
    assert body["data"]["user"] == {
        "id": str(user.id),
        "name": "Grace",
        "email": "grace@example.com",
        "role": "USER",
    }


def test_an_unknown_user_is_null(user_client: FlaskClient) -> None:
    body = gql(user_client, "{ user(id: 987654) { id } }")
    assert body["data"]["user"] is None


def test_an_id_that_cannot_exist_is_a_clear_error(user_client: FlaskClient) -> None:
    for user_id in ("abc", "0", "-3", "99999999999999999999", "1.5"):
        body = gql(
            user_client, "query($id: ID!) { user(id: $id) { id } }", id=user_id, expect_errors=True
        )
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["fields"][0]["code"] == "INVALID_ID"


def test_me_is_null_without_a_caller(client: FlaskClient) -> None:
    assert gql(client, "{ me { id } }")["data"] == {"me": None}


def test_me_is_the_caller(user_client: FlaskClient, member: models.User) -> None:
    body = gql(user_client, "{ me { id name email role } }")
    assert body["data"]["me"] == {
        "id": str(member.id),
        "name": "Member",
        "email": "member@example.com",
        "role": "USER",
    }
