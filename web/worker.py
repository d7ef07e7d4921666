"""gunicorn's threaded worker, with three things userql needs from the server itself:

- each request's arrival time (when its connection was handed to the thread pool), so the
  request's deadline and its logged duration count the time it queued for a thread;
- a request whose client has already hung up is not run (its answer would go nowhere, and
  a write would happen that nobody asked for any more);
- the health port (web/health.py), served by a thread of its own;
- a drain on SIGTERM (SHUTDOWN_DRAIN_SECONDS, handed over by the app's Health): the worker
  keeps accepting and serving while /readyz answers 503 draining, so that a balancer takes
  the instance out of rotation before gunicorn's graceful shutdown closes the listener.
  gunicorn's worker stops accepting at once but holds its listening socket open until it
  exits, and what the kernel queued there meanwhile is reset: a request the balancer
  cannot know never ran, so it cannot send it elsewhere;
- gunicorn's own answers to requests it cannot parse (400, 414, 431, …) in the JSON error
  shape of every other answer, not as HTML.

Run with `worker_class = "web.worker.ThreadWorker"` (gunicorn.conf.py). Relies on
gunicorn's ThreadWorker calling enqueue_req(conn) whenever a connection has a request to
read, handle_request(req, conn) in the pool's thread, handle_error(req, client, addr,
exc) writing its answer with client.sendall, and handle_exit(sig, frame) (SIGTERM) ending
the serving loop by clearing `alive` and waking the poller (gunicorn 23 to 27).
"""

import select
import signal
import sys
import threading
import time
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from web.arrival import ARRIVAL
from web.errors import CODE_BY_STATUS, error_body
from web.health import Health, health_of, serve_health_port

# Peer closed its side, or the connection broke.
_GONE = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


class ThreadWorker(GunicornThreadWorker):  # type: ignore[misc]
    _health: Health | None = None
    # Set once a drain has begun; setting it ends the drain early.
    _drain_over: threading.Event | None = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self._health = health_of(self.wsgi)
        drain = self._health.drain_seconds if self._health else 0.0
        # The master kills a worker graceful_timeout after its SIGTERM, drain included: a
        # drain that long would leave in-flight requests no time to finish.
        if drain and drain >= self.cfg.graceful_timeout:
            self.log.error(
                "SHUTDOWN_DRAIN_SECONDS (%g) must be less than GUNICORN_GRACEFUL_TIMEOUT (%g)",
                drain,
                self.cfg.graceful_timeout,
            )
            sys.exit(Arbiter.WORKER_BOOT_ERROR)  # the master stops rather than retry

    def handle_exit(self, sig: int, frame: Any) -> None:
        health = self._health
        if self._drain_over is None and self.alive and health and health.drain_seconds > 0:
            self._drain_over = over = threading.Event()
            health.begin_draining()
            # Logging and waiting happen in a thread: a signal handler must return quickly,
            # and must not take the logging lock the code it interrupted may hold.
            threading.Thread(
                target=self._drain,
                args=(health.drain_seconds, over),
                name="userql-drain",
                daemon=True,
            ).start()
            return
        if self._drain_over is not None:
            # A second SIGTERM: the graceful shutdown begins now.
            self._drain_over.set()
        super().handle_exit(sig, frame)

    def _drain(self, seconds: float, over: threading.Event) -> None:
        self.log.info(
            "SIGTERM: draining for %g s (serving, /readyz 503) before the graceful shutdown",
            seconds,
        )
        over.wait(seconds)
        super().handle_exit(signal.SIGTERM, None)

    def run(self) -> None:
        # On the interface the API binds, so BIND=127.0.0.1:… keeps health local too.
        address = self.cfg.address[0] if self.cfg.address else None
        host = address[0] if isinstance(address, tuple) else "0.0.0.0"  # noqa: S104
        # A SIGTERM while the app was loading: nothing to drain, and a health port opened now
        # would only reset the probes queued on it when the worker exits a moment later.
        if self.alive:
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
