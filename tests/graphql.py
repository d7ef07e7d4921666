from typing import Any

from flask.testing import FlaskClient

from db import models
from services.auth import Access, TokenService


def authorized(client: FlaskClient, tokens: TokenService, user: models.User) -> FlaskClient:
    """The client, sending a fresh token for the user's current role on every request."""
    token = tokens.issue(user_id=user.id, role=Access.of(user.role)).token
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def gql(
    client: FlaskClient, query: str, *, expect_errors: bool = False, **variables: Any
) -> dict[str, Any]:
    """POSTs one operation; asserts HTTP 200 and, unless told otherwise, no errors."""
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    if expect_errors:
        assert body.get("errors"), body
    else:
        assert "errors" not in body, body["errors"]
    return body


CREATE_USER = """
mutation Create($input: CreateUserInput!) {
  createUser(input: $input) {
    __typename
    ... on CreateUserSuccess { user { id name email role createdAt updatedAt } }
    ... on ValidationError { fields { path message code } }
    ... on EmailAlreadyRegistered { email message }
    ... on ProvisioningFailed { message }
  }
}
"""
