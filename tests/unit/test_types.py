from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite

from db.base import UTCDateTime
from schema.types.pagination import PageInfo
from schema.types.users import UserConnection, _total_count
from services.users import UserPage


def test_instants_are_stored_as_utc_and_read_back_aware() -> None:
    column = UTCDateTime()
    dialect = sqlite.dialect()
    paris = datetime(2026, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    stored = column.process_bind_param(paris, dialect)
    assert stored == datetime(2026, 6, 1, 12, 0)
    assert column.process_result_value(stored, dialect) == paris
    assert column.process_bind_param(None, dialect) is None
    assert column.process_result_value(None, dialect) is None


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1), sqlite.dialect())


def test_total_count_must_have_been_loaded() -> None:
    connection = UserConnection.from_page(UserPage(users=[], has_next_page=False, total_count=None))
    assert connection.page_info == PageInfo(has_next_page=False, end_cursor=None)
    with pytest.raises(RuntimeError, match="did not load totalCount"):
        _total_count(connection)
