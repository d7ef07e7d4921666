"""gunicorn's settings for userql; gunicorn reads ./gunicorn.conf.py by itself.

Run: gunicorn 'app:create_app()'. Every value below can be set from the environment.
"""

import os
from pathlib import Path

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

# Recycle workers now and then, staggered, so slow leaks cannot accumulate.
max_requests = 1000
max_requests_jitter = 100

# userql writes one JSON line per request itself; gunicorn keeps its own log on stdout.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Heartbeat files in memory: a slow disk must not make the arbiter kill healthy workers.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
