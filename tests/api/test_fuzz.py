"""Random bytes, random JSON and random GraphQL at the endpoint: never a 500, never internals,
always a JSON answer, quickly."""

import json
import string
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db import models
from services.auth import Access, TokenService
from tests.api.test_http import LEAKS

FUZZ = settings(
    max_examples=150,
    deadline=None,  # the machine is shared: bound time by the request, not per example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

NAMES = [
    "users",
    "user",
    "me",
    "createUser",
    "signInWithGoogle",
    "edges",
    "node",
    "id",
    "email",
    "name",
    "role",
    "totalCount",
    "pageInfo",
    "__typename",
    "__schema",
    "first",
    "after",
    "input",
]
PUNCTUATION = ["{", "}", "(", ")", ":", "$", "...", "@", "!", "[", "]", "=", '"', ",", "\n"]
graphql_like = st.lists(
    st.sampled_from(NAMES + PUNCTUATION) | st.text(alphabet=string.printable, max_size=6),
    max_size=60,
).map(" ".join)


def check(app: Flask, headers: dict[str, str] | None = None, **request: Any) -> None:
    response = app.test_client().post("/graphql", headers=headers or {}, **request)
    assert response.status_code < 500, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    body = json.loads(text)
    assert isinstance(body, dict | list)
    # An error may quote the client's own input back; that is no leak.
    sent = repr(request)
    for leak in LEAKS:
        assert leak not in text or leak in sent


@FUZZ
@given(body=st.binary(max_size=400))
def test_random_bytes(app: Flask, body: bytes) -> None:
    check(app, data=body, content_type="application/json")


@FUZZ
@given(body=json_values)
def test_random_json(app: Flask, body: object) -> None:
    check(app, data=json.dumps(body), content_type="application/json")


@FUZZ
@given(
    query=graphql_like,
    variables=st.none()
    | st.dictionaries(st.sampled_from(["n", "id", "input"]), json_values, max_size=3),
)
def test_random_documents(app: Flask, query: str, variables: dict[str, Any] | None) -> None:
    check(app, json={"query": query, "variables": variables})


ARGUMENTS = """query($f: Int, $a: String, $id: ID!) {
  users(first: $f, after: $a) { totalCount edges { cursor node { id email } } }
  user(id: $id) { id }
}"""


@FUZZ
@given(first=st.integers(), after=st.none() | st.text(max_size=30), user_id=st.text(max_size=30))
def test_random_arguments_as_admin(
    app: Flask,
    admin: models.User,
    tokens: TokenService,
    first: int,
    after: str | None,
    user_id: str,
) -> None:
    token = tokens.issue(user_id=admin.id, role=Access.ADMIN).token
    variables = {"f": first, "a": after, "id": user_id}
    check(
        app,
        headers={"Authorization": f"Bearer {token}"},
        json={"query": ARGUMENTS, "variables": variables},
    )


@FUZZ
@given(name=st.text(max_size=120), email=st.text(max_size=300), role=st.text(max_size=8))
def test_random_create_user_input_as_admin(
    app: Flask, admin: models.User, tokens: TokenService, name: str, email: str, role: str
) -> None:
    token = tokens.issue(user_id=admin.id, role=Access.ADMIN).token
    check(
        app,
        headers={"Authorization": f"Bearer {token}"},
        json={
            "query": "mutation($i: CreateUserInput!) { createUser(input: $i) { __typename } }",
            "variables": {"i": {"name": name, "email": email, "role": role}},
        },
    )
