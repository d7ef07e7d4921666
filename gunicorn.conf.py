"""gunicorn's settings for userql; gunicorn reads ./gunicorn.conf.py by itself.

Run: gunicorn 'app:create_app()'. Every value below can be set from the environment.
"""

import gc
import importlib
import os
from pathlib import Path
from typing import Any

# All interfaces by default: in a container the port is published from outside.
bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Chosen by `make bench` on 2 cores: 2 workers per core with one thread each served the most
# requests at the least CPU per request; more threads only fought over the GIL. The gthread
# class stays so that threads can be raised where requests wait long (a slow webhook).
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1))))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Each worker imports the app and builds its own engine after the fork: no connection is
# ever shared between processes.
preload_app = False

timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Time in-flight requests get to finish after SIGTERM; keep compose's stop_grace_period above.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# Long enough for a GraphQL query sent with GET; anything longer belongs in a POST body.
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190

# Recycle workers now and then, staggered, so slow leaks cannot accumulate. Every restart
# costs a worker its start and its warm caches (documents, plans, tokens, connections): at a
# thousand requests a worker restarted every few seconds under load, which `make bench` read
# as 2-3% of userql's CPU per request.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "10000"))
max_requests_jitter = max_requests // 10


def on_starting(server: Any) -> None:
    """Imports the app's module once, in the master, so that every worker forks with it.

    Importing Strawberry, graphql-core and SQLAlchemy costs a worker about 0.6 s of CPU, and
    with max_requests every worker starts again now and then: imported here, a restart costs
    a tenth of that. Only the module: each worker still builds its own app, engine and
    pools after the fork. Frozen, the imported objects are left out of every collection.
    """
    module, _, _ = str(server.app.app_uri).partition(":")
    importlib.import_module(module)
    gc.freeze()


def post_worker_init(worker: Any) -> None:
    """What the app built at start lives as long as the worker; no collection need scan it."""
    gc.freeze()


# userql writes one JSON line per request itself; gunicorn keeps its own log on stdout.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Heartbeat files in memory: a slow disk must not make the arbiter kill healthy workers.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
