import base64

import pytest

from schema.types.pagination import MAX_ID, decode_cursor, encode_cursor


@pytest.mark.parametrize("user_id", [1, 42, MAX_ID])
def test_a_cursor_round_trips(user_id: int) -> None:
    assert decode_cursor(encode_cursor(user_id)) == user_id


def test_cursors_are_opaque() -> None:
    assert "42" not in encode_cursor(42)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64!",
        "dXNlcjox=====",
        _b64("user:"),
        _b64("user:abc"),
        _b64("user:-1"),
        _b64("user:0"),
        _b64(f"user:{MAX_ID + 1}"),
        _b64("order:5"),
        _b64("5"),
        "w6k=",  # base64 of a non-ASCII character
        "é",
    ],
)
def test_anything_else_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(cursor)
