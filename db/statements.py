"""How many statements the request being served has sent, for its metrics.

Counted where the drivers send them (db.session's PyMySQL connection, SQLite's trace
callback), not on SQLAlchemy's cursor events: a listener there puts SQLAlchemy's event
dispatch on every statement of every connection, which costs far more than the count.
Outside a counted request nothing is kept.
"""

from contextvars import ContextVar, Token

_sent: ContextVar[list[int] | None] = ContextVar("statements_sent", default=None)


def start() -> Token[list[int] | None]:
    """Counts from now until end(token)."""
    return _sent.set([0])


def end(token: Token[list[int] | None]) -> int:
    """The statements sent since start()."""
    count = _sent.get()
    _sent.reset(token)
    return 0 if count is None else count[0]


def sent(_statement: object = None) -> None:
    """One statement went to the database (also SQLite's trace callback, given its text)."""
    count = _sent.get()
    if count is not None:
        count[0] += 1
