"""Running userql the way production does: the Dockerfile's CMD under gunicorn."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from flask import Flask
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def dockerfile_cmd() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    [line] = [line for line in lines if line.startswith("CMD ")]
    command: list[str] = json.loads(line.removeprefix("CMD "))
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def userql(env: Mapping[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "userql"), *args], env=dict(env), cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def start_gunicorn(env: Mapping[str, str], output: IO[bytes]) -> "subprocess.Popen[bytes]":
    command = dockerfile_cmd()
    return subprocess.Popen(
        [str(BIN / command[0]), *command[1:]],
        # A health port of its own, unless the test chose one: never the default 8081.
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HEALTH_PORT": str(free_port()), **env},
        cwd=ROOT,  # where gunicorn finds gunicorn.conf.py, as in the image's WORKDIR
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def call(
    url: str,
    body: Mapping[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One request on a new connection; the status and the JSON body, whatever the status."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_until_ready(base: str, process: "subprocess.Popen[bytes]", log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if call(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("gunicorn never became ready:\n" + log.read_text())


def stop(process: "subprocess.Popen[bytes]", grace_seconds: float = 5) -> None:
    """SIGTERM, so gunicorn's exit hooks run (they remove its metrics directory), and
    SIGKILL if it has not gone within `grace_seconds` (a server that drains needs longer)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve_in_thread(app: Flask) -> Iterator[str]:
    """The app on a free loopback port, one request at a time, for tools that need a URL;
    yields its GraphQL endpoint."""
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/graphql"
    finally:
        server.shutdown()
        thread.join()


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], Any]:
    """One request written byte for byte; the status, headers (names in lower case) and
    JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])
    }
    return int(lines[0].split(" ")[1]), headers, json.loads(body)


def workers_of(process: "subprocess.Popen[bytes]") -> list[int]:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


@contextmanager
def only(workers: list[int], answering: int) -> Iterator[None]:
    """Every new connection goes to one worker: the kernel hands it whichever worker is
    waiting in accept, and a stopped one is not. Left to the kernel, one idle worker can win
    every accept, and the test would show nothing about the other."""
    stopped = [worker for worker in workers if worker != answering]
    for worker in stopped:
        os.kill(worker, signal.SIGSTOP)
    try:
        yield
    finally:
        for worker in stopped:
            os.kill(worker, signal.SIGCONT)


def serving_workers(process: "subprocess.Popen[bytes]", log: Path, count: int = 2) -> list[int]:
    """The workers, once each takes connections: it does once it serves its health port
    (web/worker.py); until then one worker answers them all."""
    deadline = time.monotonic() + 30
    while log.read_text().count("health endpoints on port") < count:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    workers = workers_of(process)
    assert len(workers) == count, workers
    return workers
