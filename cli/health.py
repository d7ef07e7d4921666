"""`userql healthcheck`: the container's HEALTHCHECK, asking /readyz on the health port of
the interface gunicorn listens on.

The interface is read from gunicorn.conf.py itself, so the probe and the server cannot
disagree about BIND and PORT (a probe of the wrong address reports a healthy server
unhealthy). The health port is answered by a thread of each worker of its own, so the probe
is answered while every request thread is busy.
"""

import os
import runpy
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
# What a wildcard bind is reachable at from inside the same network namespace.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104


def readiness_url(conf: Path = GUNICORN_CONF, environ: Mapping[str, str] = os.environ) -> str:
    """/readyz on the health port (HEALTH_PORT, default 8081) on the interface gunicorn
    binds; on the API's own port when HEALTH_PORT is 0."""
    bind = runpy.run_path(str(conf))["bind"]
    first = bind if isinstance(bind, str) else bind[0]
    if first.startswith(("unix:", "fd://")):
        raise SystemExit(f"userql healthcheck: cannot probe {first}; pass --url")
    host, _, port = first.rpartition(":")
    health_port = environ.get("HEALTH_PORT", "").strip() or "8081"
    if health_port != "0":
        port = health_port
    return f"http://{_LOOPBACK.get(host, host)}:{port}/readyz"


def check(url: str, *, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, ValueError) as error:
        print(f"userql healthcheck: {url}: {error}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"{url}: {status}")  # noqa: T201
    return 0 if status == 200 else 1
