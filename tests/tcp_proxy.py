"""A TCP forwarder on 127.0.0.1 that a test can cut, black-hole, freeze, slow down and
restore, to play a database outage without touching the database server."""

import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._blackhole = False
        self._lose_reply_to: bytes | None = None
        self._frozen = False
        self._delay_seconds = 0.0
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._start_accepting()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        return listener

    def _start_accepting(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed by cut()
            with self._lock:
                self._connections.append(client)
                if self._blackhole:
                    continue  # accepted, never answered: what a dead network path looks like
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections.append(upstream)
            lost = threading.Event()
            threading.Thread(
                target=self._forward, args=(client, upstream, lost), daemon=True
            ).start()
            threading.Thread(target=self._reply, args=(upstream, client, lost), daemon=True).start()

    def _forward(
        self, client: socket.socket, upstream: socket.socket, lost: threading.Event
    ) -> None:
        """Client to server; with lose_reply_to, the connection dies right after that
        statement reached the server, and its answer never reaches the client."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self._frozen:
                    continue  # swallowed: packets into a black hole
                marker = self._lose_reply_to
                if marker is not None and marker in data:
                    lost.set()
                    upstream.sendall(data)
                    time.sleep(0.3)  # the server has done it by now; its OK goes nowhere
                    break
                upstream.sendall(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _reply(self, source: socket.socket, sink: socket.socket, lost: threading.Event) -> None:
        """Server to client, late by the delay, or not at all while frozen."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if lost.is_set():
                    break
                if self._frozen:
                    continue
                if self._delay_seconds:
                    time.sleep(self._delay_seconds)
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        """Open connections stay open and carry nothing either way; new ones are accepted
        and hear nothing: packets dropped on a dead path, not refused."""
        with self._lock:
            self._frozen = self._blackhole = True

    def slow_down(self, seconds: float) -> None:
        """Every answer from the server arrives `seconds` late (0 for none)."""
        self._delay_seconds = seconds

    def lose_reply_to(self, statement: bytes | None) -> None:
        """Connections die after forwarding a packet that holds `statement` (e.g. COMMIT),
        so its answer is lost; None forwards everything again."""
        self._lose_reply_to = statement

    def _drop_connections(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _stop_listening(self) -> None:
        # close() alone leaves a thread blocked in accept() accepting; shutdown() wakes it.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def cut(self) -> None:
        """Every open connection dies and new ones are refused."""
        self._stop_listening()
        self._drop_connections()

    def _ensure_listening(self) -> None:
        if self._listener.fileno() == -1:
            self._listener = self._listen(self.port)
            self._start_accepting()

    def blackhole(self) -> None:
        """Open connections die; new ones are accepted and then hear nothing."""
        self._drop_connections()
        with self._lock:
            self._blackhole = True
        self._ensure_listening()

    def restore(self) -> None:
        self._drop_connections()
        with self._lock:
            self._blackhole = self._frozen = False
        self._delay_seconds = 0.0
        self._ensure_listening()

    def close(self) -> None:
        self._stop_listening()
        self._drop_connections()
