"""gql (Python) against userql: introspect the schema once, then validate every document
locally, so a broken query fails on the client without a request ever being sent.

    USERQL_URL=http://127.0.0.1:8000/graphql \\
    USERQL_TOKEN=$(.venv/bin/userql issue-token --email ada@example.com) \\
    .venv/bin/python examples/python-gql/introspect_and_validate.py

In production only an ADMIN may introspect, so use an ADMIN's token there.
"""

import json
import os
from typing import Any

from gql import Client, gql
from gql.transport.requests import RequestsHTTPTransport
from graphql import GraphQLError


class CountingTransport(RequestsHTTPTransport):
    """Counts the requests that actually leave, to show which ones never do."""

    sent = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingTransport.sent += 1
        return super().execute(*args, **kwargs)


def main() -> None:
    url = os.environ.get("USERQL_URL", "http://127.0.0.1:8000/graphql")
    token = os.environ.get("USERQL_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = CountingTransport(url=url, headers=headers, timeout=10)
    client = Client(transport=transport, fetch_schema_from_transport=True)
    with client as session:
        assert client.schema is not None  # fetched by introspection on connect
        introspection_requests = CountingTransport.sent
        users = session.execute(gql("query Users { users(first: 2) { totalCount } }"))
        try:
            session.execute(gql("query Broken { users { edges { node { passwordHash } } } }"))
            local_error = None
        except GraphQLError as error:
            local_error = error.message
    print(
        json.dumps(
            {
                "types": len(client.schema.type_map),
                "introspection_requests": introspection_requests,
                "users": users,
                "local_error": local_error,
                "requests_sent": CountingTransport.sent,
            }
        )
    )


if __name__ == "__main__":
    main()
