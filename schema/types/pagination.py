import base64
import binascii

import strawberry

# Ids are INTEGER columns; a cursor naming a larger one cannot point at a row and would
# overflow SQLite's parameter binding.
MAX_ID = 2**31 - 1
USER_CURSOR_PREFIX = "user:"
AUDIT_CURSOR_PREFIX = "audit:"
"""A connection's cursors name its kind of row, so one connection's cursor means nothing to
another."""


def encode_cursor(row_id: int, prefix: str = USER_CURSOR_PREFIX) -> str:
    return base64.urlsafe_b64encode(f"{prefix}{row_id}".encode()).decode()


def decode_cursor(cursor: str, prefix: str = USER_CURSOR_PREFIX) -> int:
    """The row id inside a cursor; ValueError when the cursor is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError) as error:
        raise ValueError("not a cursor") from error
    digits = text.removeprefix(prefix)
    if digits == text or not digits.isdigit() or not 0 < int(digits) <= MAX_ID:
        raise ValueError("not a cursor")
    # The decoder forgives extra padding and stray characters; only what we issued is valid.
    if encode_cursor(int(digits), prefix) != cursor:
        raise ValueError("not a cursor")
    return int(digits)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None
