"""CPU cost per request as the instructions valgrind counts, for userql and the raw baseline.

Time on a shared machine wanders by a tenth from one minute to the next; instructions do not
(two runs agree within about 1%), so this tells apart changes that `make bench` and
`bench.inprocess` cannot. It counts the serving process's own instructions: neither the
database's work nor the kernel's, which both servers share, nor any waiting. Not a substitute
for `make bench`.

    .venv/bin/python -m bench.instructions                    # W1 and W2
    .venv/bin/python -m bench.instructions --workloads W1     # one workload

Needs valgrind (Debian package `valgrind`; installed if missing) and the database `make bench`
prepares (MariaDB, 10,000 users). Each count takes about a minute: valgrind runs Python some
fifty times slower.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


def serve(target: str, workload: str, requests: int, database: str) -> None:
    """Sends `requests` requests of one workload through one WSGI app, in this process."""
    os.environ.update({"DATABASE_URL": database, "USERQL_ENV": "production"})
    os.environ["JWT_SECRET"] = SECRET
    settings = Settings.from_env()
    operation, path, query_string = WORKLOADS[workload]
    # The request log is written as in production, to a sink instead of the terminal.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
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
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
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
