"""`userql healthcheck` asks /readyz where gunicorn.conf.py says gunicorn binds."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from cli import health, main


def conf(tmp_path: Path, bind: str) -> Path:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(f"bind = {bind!r}\n")
    return path


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("0.0.0.0:8000", "http://127.0.0.1:8000/readyz"),
        ("127.0.0.1:9001", "http://127.0.0.1:9001/readyz"),
        ("[::]:8000", "http://[::1]:8000/readyz"),
        ("api.internal:80", "http://api.internal:80/readyz"),
    ],
)
def test_the_probe_asks_where_gunicorn_binds(tmp_path: Path, bind: str, url: str) -> None:
    assert health.readiness_url(conf(tmp_path, bind), {"HEALTH_PORT": "0"}) == url


def test_the_probe_asks_the_health_port_on_that_interface(tmp_path: Path) -> None:
    path = conf(tmp_path, "0.0.0.0:8000")
    assert health.readiness_url(path, {}) == "http://127.0.0.1:8081/readyz"
    assert health.readiness_url(path, {"HEALTH_PORT": ""}) == "http://127.0.0.1:8081/readyz"
    assert health.readiness_url(path, {"HEALTH_PORT": "9100"}) == "http://127.0.0.1:9100/readyz"


def test_the_first_of_several_binds(tmp_path: Path) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("bind = ['127.0.0.1:7000', '127.0.0.1:7001']\n")
    assert health.readiness_url(path, {"HEALTH_PORT": "0"}) == "http://127.0.0.1:7000/readyz"


def test_a_unix_socket_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="pass --url"):
        health.readiness_url(conf(tmp_path, "unix:/run/userql.sock"))


def test_the_real_config_follows_bind_over_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("BIND", "127.0.0.1:7000")
    monkeypatch.setenv("HEALTH_PORT", "7001")
    assert health.readiness_url() == "http://127.0.0.1:7001/readyz"


@pytest.fixture
def readyz() -> Iterator[tuple[str, list[int]]]:
    statuses = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/readyz", statuses
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_healthy_only_on_200(
    readyz: tuple[str, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, statuses = readyz
    assert main(["healthcheck", "--url", url]) == 0
    assert capsys.readouterr().out == f"{url}: 200\n"
    statuses[0] = 503
    assert main(["healthcheck", "--url", url]) == 1


def test_nothing_listening_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["healthcheck", "--url", "http://127.0.0.1:1/readyz", "--timeout", "1"]) == 1
    assert "userql healthcheck: http://127.0.0.1:1/readyz" in capsys.readouterr().err
