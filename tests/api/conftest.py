import pytest

from schema.root import executable_schema
from tests.fast_execution import fast_execution, serve


@pytest.fixture(autouse=True)
def _fast_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    """With USERQL_TEST_FAST_EXECUTION=false, every app of the API tests runs without the fast
    path (FAST_EXECUTION=false)."""
    if not fast_execution():
        serve(monkeypatch, executable_schema(fast_execution=False))
