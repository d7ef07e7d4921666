"""userql against the raw baseline inside one process: CPU per request through each WSGI app,
no HTTP server and no load generator, in alternating blocks so that both see the same machine.
Quicker and steadier than `make bench` for telling whether a change helped; not a substitute.

    .venv/bin/python -m bench.inprocess            # W1 and W2 on the bench database
    .venv/bin/python -m bench.inprocess --blocks 15 --requests 200

Needs the database `make bench` prepares (MariaDB, 10,000 users).
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from werkzeug.test import EnvironBuilder

from app import build_token_service, create_app
from bench.baseline import create_app as create_baseline
from bench.run import SECRET
from services.auth import Access
from settings import Settings

WORKLOADS: dict[str, tuple[dict[str, Any], str, str]] = {
    "W1": (
        {
            "query": "query($id: ID!) { user(id: $id) { id name email role createdAt } }",
            "variables": {"id": "17"},
        },
        "/user",
        "id=17",
    ),
    "W2": (
        {"query": "{ users(first: 100) { edges { node { id name email role createdAt } } } }"},
        "/users",
        "first=100",
    ),
}


def _caller(app: Any, environ: dict[str, Any], body: bytes) -> Callable[[], None]:
    def call() -> None:
        statuses: list[str] = []
        request = {**environ, "wsgi.input": io.BytesIO(body)}
        b"".join(app(request, lambda status, _headers, _exc=None: statuses.append(status)))
        if not statuses[0].startswith("200"):
            raise RuntimeError(f"{environ['PATH_INFO']} answered {statuses[0]}")

    return call


def _cpu_ms(call: Callable[[], None], requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        call()
    return (time.process_time() - start) / requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="mysql+pymysql://root@127.0.0.1:3306/userql_bench")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--requests", type=int, default=150)
    args = parser.parse_args()
    os.environ.update({"DATABASE_URL": args.database, "USERQL_ENV": "production"})
    os.environ["JWT_SECRET"] = SECRET
    settings = Settings.from_env()
    token = build_token_service(settings).issue(user_id=1, role=Access.ADMIN).token
    # The request log is written as in production, to a sink instead of the terminal.
    terminal = sys.stdout
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        userql = create_app(settings)
        _compare(userql, create_baseline(), token, args.blocks, args.requests, terminal)


def _compare(
    userql: Any, baseline: Any, token: str, blocks: int, requests: int, terminal: TextIO
) -> None:
    for name, (operation, path, query_string) in WORKLOADS.items():
        body = json.dumps(operation).encode()
        graphql = EnvironBuilder(
            path="/graphql",
            method="POST",
            data=body,
            headers=[("Content-Type", "application/json"), ("Authorization", f"Bearer {token}")],
        ).get_environ()
        raw = EnvironBuilder(path=path, query_string=query_string).get_environ()
        ours, theirs = _caller(userql, graphql, body), _caller(baseline, raw, b"")
        _cpu_ms(ours, 30), _cpu_ms(theirs, 30)  # warm up: imports, pools, caches
        samples = [(_cpu_ms(ours, requests), _cpu_ms(theirs, requests)) for _ in range(blocks)]
        ratios = [base / mine for mine, base in samples]
        print(
            f"{name}: userql {statistics.median(m for m, _ in samples):.2f} ms CPU/request, "
            f"baseline {statistics.median(b for _, b in samples):.2f}; ratio median "
            f"{statistics.median(ratios):.2f} (blocks {min(ratios):.2f} to {max(ratios):.2f})",
            file=terminal,
            flush=True,
        )


if __name__ == "__main__":
    main()
