import pytest

from tests.fast_execution import fast_execution, without_fast_path


@pytest.fixture(autouse=True)
def _fast_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    """With USERQL_TEST_FAST_EXECUTION=false, every app of the API tests runs without the fast
    path (FAST_EXECUTION=false)."""
    if not fast_execution():
        without_fast_path(monkeypatch)
