"""gunicorn's threaded worker, with three things userql needs from the server itself:

- each request's arrival time (when its connection was handed to the thread pool), so the
  request's deadline and its logged duration count the time it queued for a thread;
- a request whose client has already hung up is not run (its answer would go nowhere, and
  a write would happen that nobody asked for any more);
- the health port (web/health.py), served by a thread of its own;
- gunicorn's own answers to requests it cannot parse (400, 414, 431, …) in the JSON error
  shape of every other answer, not as HTML.

Run with `worker_class = "web.worker.ThreadWorker"` (gunicorn.conf.py). Relies on
gunicorn's ThreadWorker calling enqueue_req(conn) whenever a connection has a request to
read, handle_request(req, conn) in the pool's thread, and handle_error(req, client, addr,
exc) writing its answer with client.sendall (gunicorn 23 to 27).
"""

import select
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from web.arrival import ARRIVAL
from web.errors import CODE_BY_STATUS, error_body
from web.health import serve_health_port

# Peer closed its side, or the connection broke.
_GONE = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


class ThreadWorker(GunicornThreadWorker):  # type: ignore[misc]
    def run(self) -> None:
        # On the interface the API binds, so BIND=127.0.0.1:… keeps health local too.
        address = self.cfg.address[0] if self.cfg.address else None
        host = address[0] if isinstance(address, tuple) else "0.0.0.0"  # noqa: S104
        serve_health_port(self.wsgi, host)
        super().run()

    def enqueue_req(self, conn: Any) -> None:
        if getattr(conn, "userql_arrived", None) is None:
            conn.userql_arrived = time.monotonic()
        super().enqueue_req(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        arrived, conn.userql_arrived = getattr(conn, "userql_arrived", None), None
        if client_gone(conn.sock):
            self.log.info("client went away before its request started; not run")
            return False  # closes the connection
        token = ARRIVAL.set(arrived)
        try:
            return super().handle_request(req, conn)
        finally:
            ARRIVAL.reset(token)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        super().handle_error(req, _JsonErrorAnswers(client), addr, exc)


class _JsonErrorAnswers:
    """The client's socket, but gunicorn's HTML error page goes out as a JSON error body
    with the same status."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendall(self, data: bytes) -> None:
        status_line = data.split(b"\r\n", 1)[0].decode("latin-1")
        _, status, reason = status_line.split(" ", 2)
        body = error_body(f"{reason}.", CODE_BY_STATUS.get(int(status), "BAD_REQUEST")).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._sock.sendall(head.encode("latin-1") + body)


def client_gone(sock: Any) -> bool:
    poller = select.poll()
    poller.register(sock, _GONE)
    return any(events & _GONE for _, events in poller.poll(0))
