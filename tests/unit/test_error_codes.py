"""The documented list of `extensions.code` values is the full list."""

import re
from pathlib import Path

from schema import errors, limits
from services import errors as service_errors
from services import rate_limit
from tests.deploy.test_proxy import PROXY_ERRORS
from web import persisted as persisted_queries
from web.errors import CODE_BY_STATUS

ROOT = Path(__file__).resolve().parent.parent.parent


def service_codes() -> set[str]:
    found: set[str] = set()
    pending: list[type[service_errors.ServiceError]] = [service_errors.ServiceError]
    while pending:
        kind = pending.pop()
        pending += kind.__subclasses__()
        if kind is not service_errors.ServiceError:
            found.add(kind.code)
    return found


def emitted_codes() -> set[str]:
    assert rate_limit.RateLimited.code == "RATE_LIMITED"  # imported so it is a subclass now
    graphql = {
        errors.PARSE_FAILED,
        errors.VALIDATION_FAILED,
        errors.BAD_USER_INPUT,
        errors.INTERNAL,
    }
    limit_codes = {
        limits.QUERY_TOO_DEEP,
        limits.TOO_MANY_ALIASES,
        limits.TOO_MANY_DIRECTIVES,
        limits.TOO_MANY_TOKENS,
        limits.QUERY_TOO_COMPLEX,
    }
    persisted = {
        persisted_queries.PERSISTED_QUERY_NOT_FOUND,
        persisted_queries.PERSISTED_QUERY_INVALID,
        persisted_queries.OPERATION_NOT_TRUSTED,
    }
    # The balancer compose puts in front (deploy/haproxy) answers its own refusals too.
    proxy = set(PROXY_ERRORS.values())
    return (
        graphql | limit_codes | persisted | service_codes() | set(CODE_BY_STATUS.values()) | proxy
    )


def documented_codes() -> set[str]:
    api_doc = (ROOT / "docs" / "api.md").read_text()
    section = api_doc.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    return {code for line in table for code in re.findall(r"`([A-Z_]+)`", line.split("|")[1])}


def test_every_code_the_server_emits_is_documented() -> None:
    assert emitted_codes() - documented_codes() == set()


def test_every_documented_code_is_emitted() -> None:
    assert documented_codes() - emitted_codes() == set()
