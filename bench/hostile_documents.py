"""How fast hostile documents are refused, in server time (the WSGI app called in-process).

    make bench-hostile

Prints a Markdown table and exits 1 if a document is not refused with its expected code, or if
its median time is over the 50 ms budget. Timings on a shared machine vary from run to run;
the budget is an order of magnitude above what a refusal should cost.
"""

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from alembic import command

from app import create_app
from db.migrations import alembic_config
from schema.limits import QueryLimits
from settings import Environment, Settings

REPEATS = 25
BUDGET_MS = 50.0


def aliases(count: int) -> str:
    return "{ " + " ".join(f"a{i}: __typename" for i in range(count)) + " }"


def aliases_in_fragments(count: int) -> str:
    per_fragment = 50
    fragments = [
        f"fragment F{f} on Query {{ "
        + " ".join(f"f{f}a{i}: __typename" for i in range(per_fragment))
        + " }"
        for f in range(count // per_fragment)
    ]
    spreads = " ".join(f"...F{f}" for f in range(count // per_fragment))
    return "{ " + spreads + " }\n" + "\n".join(fragments)


USERS_PAGE = "users(first: 100) { edges { node { id name email } } }"
CASES: list[tuple[str, dict[str, Any], str, bool]] = [
    # (name, request, expected code, needs a raised token limit to reach its own rule)
    (
        "50-level nesting",
        {"json": {"query": "{ " + "a { " * 49 + "b" + " }" * 50}},
        "QUERY_TOO_DEEP",
        False,
    ),
    ("1,000 aliases", {"json": {"query": aliases(1000)}}, "TOO_MANY_TOKENS", False),
    (
        "1,000 aliases, token limit lifted",
        {"json": {"query": aliases(1000)}},
        "TOO_MANY_ALIASES",
        True,
    ),
    (
        "1,000 aliases in fragments, token limit lifted",
        {"json": {"query": aliases_in_fragments(1000)}},
        "TOO_MANY_ALIASES",
        True,
    ),
    (
        "20 repeated directives",
        {"json": {"query": "{ __typename " + "@include(if: true) " * 20 + "}"}},
        "TOO_MANY_DIRECTIVES",
        False,
    ),
    (
        "15 pages of 100 users",
        {"json": {"query": "{ " + " ".join(f"p{i}: {USERS_PAGE}" for i in range(15)) + " }"}},
        "QUERY_TOO_COMPLEX",
        False,
    ),
    (
        "1 MiB document",
        {"json": {"query": "{ " + "__typename " * 100_000 + "}"}},
        "PAYLOAD_TOO_LARGE",
        False,
    ),
    (
        "batch of 100 operations",
        {"json": [{"query": "{ __typename }"}] * 100},
        "BAD_REQUEST",
        False,
    ),
]


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.sqlite3'}"
        command.upgrade(alembic_config(url), "head")
        base = Settings(
            database_url=url,
            environment=Environment.PRODUCTION,
            jwt_secret="b" * 40,
            log_level="WARNING",
        )
        lifted = replace(base, query_limits=replace(QueryLimits(), max_tokens=1_000_000))
        clients = {False: create_app(base).test_client(), True: create_app(lifted).test_client()}
        rows, failed = [], False
        for name, request, expected, needs_lifted in CASES:
            client = clients[needs_lifted]
            times, codes = [], set()
            for _ in range(REPEATS):
                started = time.perf_counter()
                response = client.post("/graphql", **request)
                times.append((time.perf_counter() - started) * 1000)
                codes.add(response.get_json()["errors"][0]["extensions"]["code"])
            median, worst = statistics.median(times), max(times)
            ok = codes == {expected} and median <= BUDGET_MS
            failed |= not ok
            verdict = "yes" if ok else "NO"
            refused_with = ", ".join(sorted(codes))
            rows.append(f"| {name} | {refused_with} | {median:.2f} | {worst:.2f} | {verdict} |")
    print(
        f"Hostile documents, {REPEATS} requests each "
        f"(server time, ms; budget {BUDGET_MS:.0f} ms median)\n"
    )
    print("| document | refused with | median ms | max ms | within budget |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
