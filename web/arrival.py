"""When the request being handled arrived, as time.monotonic(); set by the gunicorn worker
(web/worker.py) for the thread that runs the request, None under any other server."""

from contextvars import ContextVar

ARRIVAL: ContextVar[float | None] = ContextVar("arrival", default=None)
