"""CPU cost per request as the instructions valgrind counts, for userql and the raw baseline.

Time on a shared machine wanders by a tenth from one minute to the next; instructions do not
(two runs agree within about 1%), so this tells apart changes that `make bench` and
`bench.inprocess` cannot. It counts the serving process's own instructions: neither the
database's work nor the kernel's, which both servers share, nor any waiting. Not a substitute
for `make bench`.

    .venv/bin/python -m bench.instructions                    # W1 and W2
    .venv/bin/python -m bench.instructions --workloads W1     # one workload
    .venv/bin/python -m bench.instructions --workloads W4,W4K,W5   # the writes (W4K: the
                                                              # baseline runs W4)

Needs valgrind (Debian package `valgrind`; installed if missing) and the database `make bench`
prepares (MariaDB, 10,000 users). Each count takes about a minute: valgrind runs Python some
fifty times slower.
"""

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from werkzeug.test import EnvironBuilder

from app import build_token_service, create_app
from bench.baseline import create_app as create_baseline
from bench.inprocess import WORKLOADS, _caller
from bench.run import SECRET
from services.auth import Access
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Requests before counting starts (imports, pools and caches warm up in them) and counted.
WARM, COUNTED = 50, 600
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


# The writes of `make bench` (W4, W4K, W5), each request its own: the GraphQL operation and
# the baseline's method, path and JSON body, for request number n of a run.
CREATE = (
    "mutation($i: CreateUserInput!) { createUser(input: $i) { "
    "__typename ... on CreateUserSuccess { user { id name email role } } } }"
)
UPDATE = (
    "mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { "
    "__typename ... on UpdateUserSuccess { user { id name email role } } } }"
)
Write = Callable[[str], tuple[dict[str, Any], str, str, dict[str, Any]]]


def _create(prefix: str) -> Write:
    """W4's createUser with emails of their own (W4K's too, so neither meets the other's)."""

    def write(n: str) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
        user = {"name": "Bench", "email": f"{prefix}-{n}@bench.test"}
        return {"query": CREATE, "variables": {"i": user}}, "POST", "/users", user

    return write


WRITES: dict[str, Write] = {
    "W4": _create("i"),
    "W4K": _create("k"),
    # User 1 is the admin whose token drives the run: left as it is.
    "W5": lambda n: (
        {"query": UPDATE, "variables": {"id": str(_other(n)), "i": {"name": f"B {n}"}}},
        "PATCH",
        f"/users/{_other(n)}",
        {"name": f"B {n}"},
    ),
}


def _other(n: str) -> int:
    return 2 + int(n.rsplit("-", 1)[1]) * 7919 % 9999


def _writer(app: Any, workload: str, target: str, token: str) -> Callable[[], None]:
    """Sends the workload's next write; built from one environ, so that building requests
    costs next to nothing beside serving them."""
    run = uuid.uuid4().hex[:12]
    count = itertools.count()
    _, method, path, _ = WRITES[workload](f"{run}-0")
    if target == "baseline":
        base = EnvironBuilder(path=path, method=method, content_type="application/json")
    else:
        headers = [("Authorization", f"Bearer {token}")]
        base = EnvironBuilder(
            path="/graphql", method="POST", content_type="application/json", headers=headers
        )
    environ = base.get_environ()

    def call() -> None:
        n = f"{run}-{next(count)}"
        operation, _, path, payload = WRITES[workload](n)
        body = json.dumps(payload if target == "baseline" else operation).encode()
        request = {**environ, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
        if target == "baseline":
            request["PATH_INFO"] = path
        elif workload == "W4K":
            request["HTTP_IDEMPOTENCY_KEY"] = n
        statuses: list[str] = []
        b"".join(app(request, lambda status, _headers, _exc=None: statuses.append(status)))
        if not statuses[0].startswith("200"):
            raise RuntimeError(f"{workload} answered {statuses[0]}")

    return call


def serve(target: str, workload: str, requests: int, database: str) -> None:
    """Sends `requests` requests of one workload through one WSGI app, in this process."""
    os.environ.update({"DATABASE_URL": database, "USERQL_ENV": "production"})
    os.environ["JWT_SECRET"] = SECRET
    # As `make bench` runs it: W4 creates users faster than the product's limit allows.
    os.environ["RATE_LIMIT_CREATE_USER"] = "100000000/60"
    settings = Settings.from_env()
    # The request log is written as in production, to a sink instead of the terminal.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        if workload in WRITES:
            token = build_token_service(settings).issue(user_id=1, role=Access.ADMIN).token
            app = create_baseline() if target == "baseline" else create_app(settings)
            call = _writer(app, workload, target, token)
            for _ in range(requests):
                call()
            return
        operation, path, query_string = WORKLOADS[workload]
        if target == "baseline":
            raw = EnvironBuilder(path=path, query_string=query_string).get_environ()
            call = _caller(create_baseline(), raw, b"")
        else:
            token = build_token_service(settings).issue(user_id=1, role=Access.ADMIN).token
            body = json.dumps(operation).encode()
            graphql = EnvironBuilder(
                path="/graphql",
                method="POST",
                data=body,
                headers=[
                    ("Content-Type", "application/json"),
                    ("Authorization", f"Bearer {token}"),
                ],
            ).get_environ()
            call = _caller(create_app(settings), graphql, body)
        for _ in range(requests):
            call()


def _instructions(target: str, workload: str, requests: int, database: str) -> int:
    result = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--serve",
            target,
            "--workloads",
            workload,
            "--requests",
            str(requests),
            "--database",
            database,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = _REFS.search(result.stderr)
    if found is None:
        raise RuntimeError(f"valgrind printed no instruction count:\n{result.stderr}")
    return int(found.group(1).replace(",", ""))


def per_request(target: str, workload: str, database: str) -> float:
    """Instructions per request: two runs that differ only in how many requests they send,
    so that starting Python and the app cancels out."""
    short = _instructions(target, workload, WARM, database)
    long = _instructions(target, workload, WARM + COUNTED, database)
    return (long - short) / COUNTED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="mysql+pymysql://root@127.0.0.1:3306/userql_bench")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="W1, W2, W4, W4K, W5")
    parser.add_argument("--serve", choices=("userql", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=COUNTED, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.workloads, args.requests, args.database)
        return
    if shutil.which("valgrind") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=True)
    print("| workload | userql instructions/request | baseline | baseline / userql |")
    print("|---|---|---|---|")
    for workload in args.workloads.split(","):
        ours = per_request("userql", workload, args.database)
        theirs = per_request("baseline", workload, args.database)
        print(f"| {workload} | {ours:,.0f} | {theirs:,.0f} | {theirs / ours:.2f} |", flush=True)


if __name__ == "__main__":
    main()
