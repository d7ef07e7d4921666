"""A real HTTP server on 127.0.0.1 standing in for the provisioning service."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    status: int = 200
    delay_seconds: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def provisioning_server(behaviour: Behaviour) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            behaviour.received.append(
                {"headers": dict(self.headers), "body": json.loads(self.rfile.read(length))}
            )
            time.sleep(behaviour.delay_seconds)
            try:
                self.send_response(behaviour.status)
                self.end_headers()
                self.wfile.write(b"{}")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting, as a timeout test wants

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/provision"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
