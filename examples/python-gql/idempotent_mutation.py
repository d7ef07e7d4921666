"""gql (Python) sending a mutation with an Idempotency-Key, then again as a client would after
a lost answer: userql runs it once and replays the first answer.

    USERQL_URL=http://127.0.0.1:8000/graphql \\
    USERQL_TOKEN=$(.venv/bin/userql issue-token --email ada@example.com) \\
    .venv/bin/python examples/python-gql/idempotent_mutation.py
"""

import json
import os
import uuid

from gql import Client, gql
from gql.transport.requests import RequestsHTTPTransport

CREATE = gql(
    """
    mutation Create($input: CreateUserInput!) {
      createUser(input: $input) { __typename ... on CreateUserSuccess { user { id email } } }
    }
    """
)


def main() -> None:
    key = str(uuid.uuid4())  # one key per logical change, kept for each of its retries
    transport = RequestsHTTPTransport(
        url=os.environ.get("USERQL_URL", "http://127.0.0.1:8000/graphql"),
        headers={"Authorization": f"Bearer {os.environ['USERQL_TOKEN']}", "Idempotency-Key": key},
    )
    client = Client(transport=transport)
    variables = {"input": {"name": "Retried Once", "email": f"retry-{key}@example.com"}}
    answers, replayed = [], []
    for _ in range(2):
        answers.append(client.execute(CREATE, variable_values=variables))
        headers = transport.response_headers
        replayed.append(headers is not None and headers.get("Idempotent-Replayed") == "true")
    print(json.dumps({"replayed": replayed, "first": answers[0], "retry": answers[1]}))


if __name__ == "__main__":
    main()
