from typing import Any

from flask.testing import FlaskClient


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
