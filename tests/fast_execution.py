"""Serving another build of the schema in the API tests: the stock one (USERQL_TEST_FAST_EXECUTION
=false runs tests/api that way), or one with an extra extension."""

import os

import pytest

from schema.root import UserqlSchema, executable_schema

FAST_EXECUTION_VARIABLE = "USERQL_TEST_FAST_EXECUTION"


def fast_execution() -> bool:
    """Whether the API tests run with the fast path (the default) or without."""
    return os.environ.get(FAST_EXECUTION_VARIABLE, "true").strip().lower() not in (
        "false",
        "0",
        "no",
        "off",
    )


def serve(monkeypatch: pytest.MonkeyPatch, served: UserqlSchema) -> None:
    """Apps created from now on, until the test ends, serve `served`."""
    import app

    monkeypatch.setattr(app, "executable_schema", lambda **_: served)


def without_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps created from now on, until the test ends, run Strawberry's stock execution, as
    subgraphs too."""
    import app

    monkeypatch.setattr(
        app,
        "executable_schema",
        lambda *, fast_execution, federation: executable_schema(
            fast_execution=False, federation=federation
        ),
    )
