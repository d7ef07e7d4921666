"""podman on a machine with no container registry: a private configuration, a stand-in for
the Dockerfile's base image built from Debian's packages, and the build itself.

The facts behind each setting are in the README's Docker section: crun refuses a mixed
cgroup layout (so runc), there is no systemd (so cgroupfs and a file events log), rlimits
cannot be raised (so fixed ulimits), and podman's OCI format drops HEALTHCHECK (so
--format docker).
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
# Kept between runs on one machine (podman's store is), so only the first run builds it.
STATE = Path(os.environ.get("USERQL_PODMAN_STATE", "/var/tmp/userql-podman"))  # noqa: S108
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def environment() -> dict[str, str]:
    STATE.mkdir(parents=True, exist_ok=True)
    conf = STATE / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def _apt_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        if line.startswith("deb "):
            return line.split()[1]
    raise AssertionError("no Debian mirror in apt's sources")


def ensure_base_image() -> None:
    """A stand-in for python:3.11-slim-bookworm: Debian's Python in a venv at /usr/local, so
    that `python`, `pip` and sys.prefix are where the official image has them."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    root = STATE / "base-root"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=ca-certificates,netbase,tzdata,python3,python3-venv",
            "bookworm",
            str(root),
            _apt_mirror(),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    subprocess.run(["chroot", str(root), "python3", "-m", "venv", "/usr/local"], check=True)
    subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True)
    # As a context, so its pipe is closed: pytest -W error fails on a leaked file.
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
        subprocess.run(
            [
                "podman",
                "import",
                "--change",
                "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "-",
                BASE_IMAGE,
            ],
            stdin=tar.stdout,
            env=environment(),
            check=True,
            capture_output=True,
            timeout=600,
        )
        assert tar.wait() == 0
    shutil.rmtree(root, ignore_errors=True)


def _pip_conf() -> Path:
    """pip inside the build trusts what pip on the host trusts (an egress proxy may sign
    with its own authority); nothing of it is copied into the image."""
    conf = STATE / "pip.conf"
    conf.write_text(f"[global]\ncert = {HOST_CA_BUNDLE}\n")
    return conf


def build(tag: str) -> float:
    """Builds the Dockerfile in this checkout; returns the seconds it took."""
    volumes: list[str] = ["-v", f"{_pip_conf()}:/etc/pip.conf:ro"]
    if HOST_CA_BUNDLE.exists():
        volumes += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    started = time.monotonic()
    podman(
        "build",
        "--format",
        "docker",
        "--pull=never",
        *volumes,
        "-t",
        tag,
        str(ROOT),
        timeout=900,
    )
    return time.monotonic() - started


def inspect(tag: str) -> dict[str, object]:
    [image] = json.loads(podman("image", "inspect", tag).stdout)
    return dict(image)


@contextmanager
def container(tag: str, *args: str, name: str) -> Iterator[str]:
    """A detached container on the host network, removed afterwards whatever happened."""
    podman("rm", "--force", "--ignore", name, check=False)
    podman("run", "--detach", "--network", "host", "--name", name, *args, tag)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def run(tag: str, *command: str, env: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    flags = [f"--env={item}" for item in env]
    return podman("run", "--rm", "--network", "host", *flags, tag, *command, check=False)


# compose.yml's db service runs mysql:8.4, which cannot be pulled here. The stand-in keeps
# that image's contract (the MYSQL_* variables, server options as arguments, a datadir at
# /var/lib/mysql initialised on first start, mysqladmin for the healthcheck) on Debian's
# MariaDB: it checks the wiring around the database, not MySQL 8.4 itself.
MARIADB_STANDIN = "localhost/userql-test/mysql-standin:8.4"
_MARIADB_CONTAINERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mariadb-server \\
    && rm -rf /var/lib/apt/lists/* /var/lib/mysql/* \\
    && mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld /var/lib/mysql
COPY standin.cnf /etc/mysql/mariadb.conf.d/99-standin.cnf
COPY --chmod=0755 entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/mysql
EXPOSE 3306
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["mariadbd"]
"""
# As mysql:8.4's own configuration: every address, no reverse lookups of clients.
_MARIADB_CONF = """\
[mariadbd]
bind-address = 0.0.0.0
port = 3306
skip-name-resolve
"""
_MARIADB_ENTRYPOINT = r"""#!/bin/sh
# mysql:8.4's entrypoint contract on Debian's MariaDB: an empty datadir is initialised from
# MYSQL_ROOT_PASSWORD, MYSQL_DATABASE, MYSQL_USER and MYSQL_PASSWORD; arguments that start
# with "-" are options for the server.
set -eu
if [ "${1#-}" != "$1" ]; then
    set -- mariadbd "$@"
fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
    exec "$@"
fi
shift
: "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD is required}"
literal() { printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"; }
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld /var/lib/mysql
if [ ! -d /var/lib/mysql/mysql ]; then
    echo "initialising the datadir" >&2
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    socket=/run/mysqld/initialise.sock
    mariadbd --user=mysql --skip-networking --socket="$socket" "$@" &
    server=$!
    tries=0
    until mariadb-admin --socket="$socket" -uroot ping --silent >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -lt 120 ] || { echo "the server did not start" >&2; exit 1; }
        sleep 0.5
    done
    root=$(literal "$MYSQL_ROOT_PASSWORD")
    {
        # As mysql:8.4 has them: root@localhost and root@%, no other accounts.
        echo "DELETE FROM mysql.global_priv WHERE User NOT IN ('mariadb.sys', 'root')"
        echo "    OR Host <> 'localhost';"
        echo "DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';"
        echo "FLUSH PRIVILEGES;"
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $root;"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY $root;"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            echo "CREATE DATABASE \`$MYSQL_DATABASE\`;"
        fi
        if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
            user=$(literal "$MYSQL_USER")
            echo "CREATE USER $user@'%' IDENTIFIED BY $(literal "$MYSQL_PASSWORD");"
            if [ -n "${MYSQL_DATABASE:-}" ]; then
                echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO $user@'%';"
            fi
        fi
    } | mariadb --socket="$socket" -uroot
    kill "$server"
    wait "$server"
    echo "datadir initialised" >&2
fi
exec mariadbd --user=mysql "$@"
"""


def ensure_mariadb_image() -> None:
    """Builds MARIADB_STANDIN on the stand-in base with Debian's mariadb-server (about 20 s
    with the base local); kept in podman's store, rebuilt only when its sources change."""
    _ensure_standin(
        MARIADB_STANDIN,
        {
            "Containerfile": _MARIADB_CONTAINERFILE,
            "standin.cnf": _MARIADB_CONF,
            "entrypoint.sh": _MARIADB_ENTRYPOINT,
        },
    )


# compose.yml's proxy service runs haproxy:2.6, which cannot be pulled here. The stand-in
# keeps that image's contract as far as compose.yml uses it: haproxy in /usr/local/sbin, run
# as the haproxy user in /var/lib/haproxy, an entrypoint that adds -W -db (master-worker, in
# the foreground) to a `haproxy` command, the command reading
# /usr/local/etc/haproxy/haproxy.cfg, SIGUSR1 (a soft stop) as its stop signal, and bash,
# which the compose file's healthcheck uses. It is Debian's haproxy 2.6, the branch the
# image's tag names, on the stand-in base.
HAPROXY_STANDIN = "localhost/userql-test/haproxy-standin:2.6"
_HAPROXY_CONTAINERFILE = f"""\
FROM {BASE_IMAGE}
RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d \\
    && chmod 0755 /usr/sbin/policy-rc.d \\
    && apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \\
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d /etc/haproxy \\
    && ln -s /usr/sbin/haproxy /usr/local/sbin/haproxy \\
    && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy \\
    && chown haproxy:haproxy /var/lib/haproxy
COPY --chmod=0755 entrypoint.sh /usr/local/bin/docker-entrypoint.sh
STOPSIGNAL SIGUSR1
USER haproxy
WORKDIR /var/lib/haproxy
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
"""
_HAPROXY_ENTRYPOINT = r"""#!/bin/sh
# haproxy:2.6's entrypoint: options alone run haproxy; haproxy runs in master-worker mode,
# in the foreground.
set -e
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
if [ "$1" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
"""


def ensure_haproxy_image() -> None:
    """Builds HAPROXY_STANDIN on the stand-in base with Debian's haproxy; kept in podman's
    store, rebuilt only when its sources change."""
    _ensure_standin(
        HAPROXY_STANDIN,
        {"Containerfile": _HAPROXY_CONTAINERFILE, "entrypoint.sh": _HAPROXY_ENTRYPOINT},
    )


# compose.yml's redis service runs redis:7.4, which cannot be pulled here. The stand-in keeps
# that image's contract as far as compose.yml uses it: an entrypoint that takes the command
# as redis-server's (arguments that start with "-" are options for it) and runs it as the
# redis user in /data, no configuration file, and every address with protected mode off
# (the official image builds redis-server with protected-mode defaulting to "no", so other
# containers may connect without a password); redis-cli for the healthcheck. It is Debian's
# Redis 7.0 on the stand-in base: it checks the wiring, not Redis 7.4 itself.
REDIS_STANDIN = "localhost/userql-test/redis-standin:7"
_REDIS_CONTAINERFILE = f"""\
FROM {BASE_IMAGE}
RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d \\
    && chmod 0755 /usr/sbin/policy-rc.d \\
    && apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        redis-server redis-tools \\
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \\
    && mkdir -p /data && chown redis:redis /data
COPY --chmod=0755 entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
"""
_REDIS_ENTRYPOINT = r"""#!/bin/sh
# redis:7.4's entrypoint contract on Debian's Redis: options alone run redis-server, which
# runs as the redis user, with protected mode off unless the arguments turn it back on
# (the last of an option given twice wins).
set -eu
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
    if [ "$(id -u)" = 0 ]; then
        find . \! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
"""


def ensure_redis_image() -> None:
    """Builds REDIS_STANDIN on the stand-in base with Debian's redis-server (some 10 s with
    the base local); kept in podman's store, rebuilt only when its sources change."""
    _ensure_standin(
        REDIS_STANDIN,
        {"Containerfile": _REDIS_CONTAINERFILE, "entrypoint.sh": _REDIS_ENTRYPOINT},
    )


def _ensure_standin(tag: str, sources: dict[str, str]) -> None:
    """Builds `tag` from `sources` (a Containerfile and what it copies) on the stand-in
    base, unless podman's store has it from the same sources."""
    digest = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()
    if podman("image", "exists", tag, check=False).returncode == 0:
        labels: Any = inspect(tag).get("Labels") or {}
        if labels.get("userql.standin.sources") == digest:
            return
    ensure_base_image()
    context = STATE / tag.rsplit("/", 1)[-1].replace(":", "-")
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for name, text in sources.items():
        (context / name).write_text(text)
    podman(
        "build",
        "--format",
        "docker",
        "--pull=never",
        "--label",
        f"userql.standin.sources={digest}",
        "-t",
        tag,
        str(context),
        timeout=900,
    )
    shutil.rmtree(context, ignore_errors=True)
