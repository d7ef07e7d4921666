"""gunicorn's settings for userql; gunicorn reads ./gunicorn.conf.py by itself.

Run: gunicorn 'app:create_app()'. Every value below can be set from the environment.
"""

import gc
import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def _setting(name: str, default: str) -> str:
    """An empty value means the default, as in Settings: compose passes every line of an
    env_file through, `WEB_CONCURRENCY=` included."""
    return os.environ.get(name, "").strip() or default


def _whole(name: str, default: int) -> int:
    raw = _setting(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be a whole number, not {raw!r}") from None


# All interfaces by default: in a container the port is published from outside.
# `userql healthcheck` reads this value to know where to ask.
bind = _setting("BIND", f"0.0.0.0:{_setting('PORT', '8000')}")
# Chosen by `make bench` on 2 cores: 2 workers per core with one thread each served the most
# requests at the least CPU per request; more threads only fought over the GIL. The gthread
# class stays so that threads can be raised where requests wait long (a slow webhook).
workers = _whole("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1))
# gunicorn's gthread worker, told each request's arrival and serving the health port.
worker_class = "web.worker.ThreadWorker"
threads = _whole("GUNICORN_THREADS", 1)
# Each worker imports the app and builds its own engine after the fork: no connection is
# ever shared between processes.
preload_app = False

timeout = _whole("GUNICORN_TIMEOUT", 30)
# Time in-flight requests get to finish after SIGTERM; keep compose's stop_grace_period above.
graceful_timeout = _whole("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = 5

# Long enough for a GraphQL query sent with GET; anything longer belongs in a POST body.
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190

# Recycle workers now and then, staggered, so slow leaks cannot accumulate. Every restart
# costs a worker its start and its warm caches (documents, plans, tokens, connections), so
# the interval is long enough that restarts stay rare under load (docs/performance.md).
max_requests = _whole("GUNICORN_MAX_REQUESTS", 10000)
max_requests_jitter = max_requests // 10


_METRICS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_metrics_directory_is_ours = False


def on_starting(server: Any) -> None:
    """Imports the app's module once, in the master, so that every worker forks with it.

    Importing Strawberry, graphql-core and SQLAlchemy is most of a worker's start, and with
    max_requests every worker starts again now and then: imported here, a restart skips it.
    Only the module: each worker still builds its own app, engine and pools after the fork.
    Frozen, the imported objects are left out of every collection.
    """
    _prepare_metrics_directory()
    module, _, _ = str(server.app.app_uri).partition(":")
    importlib.import_module(module)
    gc.freeze()


def _prepare_metrics_directory() -> None:
    """/metrics adds up every worker's counts through prometheus-client's multiprocess mode:
    each worker writes files of its own into this directory. The library picks its mode
    when first imported, which on_starting does next, so the directory is named first: in
    memory where there is /dev/shm, and removed on exit when it is ours."""
    global _metrics_directory_is_ours
    if not os.environ.get(_METRICS_DIRECTORY_VARIABLE):
        # Private (mode 0700), in memory with the heartbeat files below where it can be.
        os.environ[_METRICS_DIRECTORY_VARIABLE] = tempfile.mkdtemp(
            prefix="userql-metrics-", dir=worker_tmp_dir
        )
        _metrics_directory_is_ours = True
    # Counts of an earlier run would be added to this one's.
    for stale in Path(os.environ[_METRICS_DIRECTORY_VARIABLE]).glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A gone worker's gauges (connections in use) stop counting; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _metrics_directory_is_ours:
        shutil.rmtree(os.environ[_METRICS_DIRECTORY_VARIABLE], ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """What the app built at start lives as long as the worker; no collection need scan it."""
    gc.freeze()


# userql writes one JSON line per request itself; gunicorn keeps its own log on stdout.
accesslog = None
errorlog = "-"
loglevel = _setting("LOG_LEVEL", "info").lower()

# Heartbeat files in memory: a slow disk must not make the arbiter kill healthy workers.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108
forwarded_allow_ips = _setting("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn's control socket (for gunicornc) would live under $HOME, which the image's user
# does not have; nothing of userql uses it.
control_socket_disable = True
