"""make bench: userql against a raw Flask + SQLAlchemy Core baseline, under the same gunicorn
config, driven by wrk, interleaved A B A B.

    make bench                       # MariaDB: mysql+pymysql://root@127.0.0.1:3306/userql_bench
    make bench BENCH_ARGS=--sqlite   # a SQLite file instead
    make bench BENCH_ARGS="--rounds 5 --seconds 10"
    make bench BENCH_ARGS="--workloads 'W1 user(id)' --variants metrics,tracing"

With --variants (by default metrics,tracing, on W1 and W2), userql runs a second and third
time in the same interleaved rounds: with metrics on (METRICS_ACCESS=loopback), and with
tracing on at 100 % sampling, exporting over OTLP/HTTP to a sink in this process.

Writes bench/results/<time>.json and .md, and bench/results/latest.md.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import create_engine, delete, insert, text
from sqlalchemy.engine import make_url

from app import build_token_service
from db import models
from db.base import utc_now
from db.migrations import alembic_config
from db.session import make_engine
from services.auth import Access
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WRK_DIR = ROOT / "bench" / "wrk"
RESULTS = ROOT / "bench" / "results"
USERS = 10_000
SECRET = "bench-secret-that-is-long-enough-for-hs256"
WORKLOADS = {
    "W1 user(id)": "w1_user.lua",
    "W2 users(first: 100)": "w2_users.lua",
    "W3 walk by cursor": "w3_walk.lua",
    "W4 createUser": "w4_create.lua",
    "W5 updateUser": "w5_update.lua",
    "W4K createUser with a key": "w4k_create_keyed.lua",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# Each runs userql with these settings added to the common ones.
VARIANTS: dict[str, dict[str, str]] = {
    "metrics": {"METRICS_ACCESS": "loopback"},
    "tracing": {"TRACING": "on", "OTEL_TRACES_SAMPLER": "always_on"},
}
VARIANT_WORKLOADS = ("W1 user(id)", "W2 users(first: 100)")
# A workload priced against another of userql's own: in each of its rounds userql also runs
# the other, so the two compare within a round, as userql and the baseline do. Compared
# across cells instead, they would meet the machine at different minutes.
PAIRED = {"W4K createUser with a key": "W4 createUser"}
PAIRED_RUN = "userql, the paired workload"


@dataclass
class Server:
    name: str
    port: int
    process: "subprocess.Popen[bytes]"
    log: Path

    @property
    def kind(self) -> str:
        """What the wrk scripts send it: userql's GraphQL, or the baseline's routes."""
        return "baseline" if self.name == "baseline" else "userql"

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [self.process.pid, *map(int, children.read_text().split())]

    def workers(self) -> list[int]:
        return self.pids()[1:]

    def cpu_seconds(self) -> float:
        """Master and live workers, plus the workers gunicorn has already reaped."""
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
            if pid == self.process.pid:
                total += int(fields[13]) + int(fields[14])  # cutime + cstime
        return total / CLOCK_TICKS

    def peak_rss_mib(self) -> float:
        peaks = []
        for pid in self.workers():
            status = Path(f"/proc/{pid}/status").read_text()
            peaks.append(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024)  # type: ignore[union-attr]
        return max(peaks)


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    statements_per_request: float | None
    errors: int


@dataclass
class Cell:
    runs: dict[str, list[Run]] = field(default_factory=dict)


def prepare_database(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        server = create_engine(parsed.set(database=""))
        with server.begin() as connection:
            connection.execute(text(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}`"))
        server.dispose()
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    now = utc_now()
    rows = [
        {
            "name": f"Bench User {i}",
            "email": f"user{i}@bench.test",
            "role": models.Role.ADMIN if i == 1 else models.Role.USER,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(1, USERS + 1)
    ]
    with engine.begin() as connection:
        # Every run starts from the same rows: a key kept from an earlier run would be
        # replayed, not run.
        for model in (models.IdempotencyKey, models.AuditEvent, models.User):
            connection.execute(delete(model))
        if parsed.get_backend_name() != "sqlite":
            connection.execute(text("ALTER TABLE users AUTO_INCREMENT = 1"))
        elif connection.execute(
            text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
        ).first():
            # Only AUTOINCREMENT tables have one; without, ids restart after the DELETE.
            connection.execute(text("DELETE FROM sqlite_sequence WHERE name = 'users'"))
        connection.execute(insert(models.User), rows)
    engine.dispose()


def start(name: str, app: str, env: dict[str, str], port: int, logs: Path) -> Server:
    log = logs / f"{name}.log"
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), app],
        env={"PATH": f"{BIN}:/usr/bin:/bin", **env, "BIND": f"127.0.0.1:{port}"},
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    probe = "/user?id=1" if name == "baseline" else "/readyz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=2):
                return Server(name, port, process, log)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not start:\n{log.read_text()}")


def statements(url: str) -> int | None:
    if make_url(url).get_backend_name() == "sqlite":
        return None
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(text("SHOW GLOBAL STATUS LIKE 'Questions'")).one()[1]
    engine.dispose()
    return int(value)


def wrk(
    server: Server, script: str, connections: int, seconds: int, token: str, run_id: str
) -> str:
    env = {
        **os.environ,
        "BENCH_TARGET": server.kind,
        "BENCH_TOKEN": token,
        "BENCH_WRK_DIR": str(WRK_DIR),
        "BENCH_RUN": run_id,
    }
    threads = min(connections, 4)
    result = subprocess.run(
        [
            "wrk",
            "--latency",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(WRK_DIR / script),
            f"http://127.0.0.1:{server.port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _milliseconds(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if match is None:
        raise ValueError(f"wrk printed a latency this script cannot read: {value!r}")
    number, unit = match.groups()
    return (
        float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]
    )


def measure(
    server: Server, script: str, connections: int, seconds: int, token: str, url: str, run_id: str
) -> Run:
    before_cpu, before_statements = server.cpu_seconds(), statements(url)
    output = wrk(server, script, connections, seconds, token, run_id)
    if "99%" not in output:
        raise RuntimeError(f"wrk gave no latency distribution:\n{output}")
    after_cpu, after_statements = server.cpu_seconds(), statements(url)
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(map(int, match.groups()))
    per_request = None
    if before_statements is not None and after_statements is not None:
        # The two probes of SHOW STATUS count too; they are taken out.
        per_request = (after_statements - before_statements - 2) / max(total, 1)
    return Run(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE).group(1)),  # type: ignore[union-attr]
        p99_ms=_milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1)),  # type: ignore[union-attr]
        cpu_ms_per_request=(after_cpu - before_cpu) * 1000 / max(total, 1),
        statements_per_request=per_request,
        errors=errors,
    )


def report(cells: dict[tuple[str, int], Cell], rss: dict[str, float], meta: dict[str, Any]) -> str:
    overheads: list[str] = []
    lines = [
        f"Run {meta['time']} on {meta['machine']}; database {meta['database']}; "
        f"{meta['rounds']} rounds of {meta['seconds']} s, interleaved; medians.",
        "",
        "| workload | conn | userql req/s | baseline req/s | ratio (per round) | median ratio "
        "| userql p50 / p99 ms | baseline p50 / p99 ms | userql CPU ms/req | baseline CPU ms/req "
        "| userql SQL/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pairs: list[str] = []
    for (workload, connections), cell in cells.items():
        ours, raw = cell.runs["userql"], cell.runs["baseline"]
        if (plain := cell.runs.get(PAIRED_RUN)) is not None:
            pairs.append(_pair_line(workload, connections, ours, plain))
        for variant, theirs in cell.runs.items():
            if variant not in ("userql", "baseline", PAIRED_RUN):
                overheads.append(
                    f"| {workload} | {connections} | {variant} "
                    f"| {statistics.median(r.cpu_ms_per_request for r in ours):.3f} "
                    f"| {statistics.median(r.cpu_ms_per_request for r in theirs):.3f} "
                    f"| {_overhead(ours, theirs):+.1%} "
                    f"| {statistics.median(r.requests_per_second for r in theirs):.0f} |"
                )
        ratios = [
            a.requests_per_second / b.requests_per_second for a, b in zip(ours, raw, strict=True)
        ]
        med = statistics.median
        sql = [r.statements_per_request for r in ours if r.statements_per_request is not None]
        lines.append(
            f"| {workload} | {connections} | {med(r.requests_per_second for r in ours):.0f} "
            f"| {med(r.requests_per_second for r in raw):.0f} "
            f"| {', '.join(f'{x:.2f}' for x in ratios)} | **{med(ratios):.2f}** "
            f"| {med(r.p50_ms for r in ours):.1f} / {med(r.p99_ms for r in ours):.1f} "
            f"| {med(r.p50_ms for r in raw):.1f} / {med(r.p99_ms for r in raw):.1f} "
            f"| {med(r.cpu_ms_per_request for r in ours):.2f} "
            f"| {med(r.cpu_ms_per_request for r in raw):.2f} "
            f"| {f'{med(sql):.2f}' if sql else 'n/a'} "
            f"| {sum(r.errors for r in ours + raw)} |"
        )
    if overheads:
        lines += [
            "",
            "userql with observability on, in the same rounds (CPU per request, medians; "
            "overhead: the median of the rounds' ratios):",
            "",
            "| workload | conn | variant | userql CPU ms/req | variant CPU ms/req | overhead "
            "| variant req/s |",
            "|---|---|---|---|---|---|---|",
            *overheads,
        ]
    if pairs:
        lines += [
            "",
            "userql against itself, in the same rounds (each round runs both workloads on "
            "the same server):",
            "",
            "| workload | conn | against | req/s | against req/s | ratio (per round) "
            "| median ratio | CPU ms/req | against CPU ms/req |",
            "|---|---|---|---|---|---|---|---|---|",
            *pairs,
        ]
    lines += [
        "",
        f"Peak RSS per worker: userql {rss['userql']:.0f} MiB, baseline {rss['baseline']:.0f} MiB.",
    ]
    return "\n".join(lines) + "\n"


def _pair_line(workload: str, connections: int, ours: list[Run], plain: list[Run]) -> str:
    med = statistics.median
    ratios = [
        a.requests_per_second / b.requests_per_second for a, b in zip(ours, plain, strict=True)
    ]
    return (
        f"| {workload} | {connections} | {PAIRED[workload]} "
        f"| {med(r.requests_per_second for r in ours):.0f} "
        f"| {med(r.requests_per_second for r in plain):.0f} "
        f"| {', '.join(f'{x:.2f}' for x in ratios)} | **{med(ratios):.2f}** "
        f"| {med(r.cpu_ms_per_request for r in ours):.2f} "
        f"| {med(r.cpu_ms_per_request for r in plain):.2f} |"
    )


def _overhead(ours: list[Run], theirs: list[Run]) -> float:
    """The median over the rounds of the variant's CPU per request over plain userql's in
    the same round."""
    return (
        statistics.median(
            b.cpu_ms_per_request / a.cpu_ms_per_request for a, b in zip(ours, theirs, strict=True)
        )
        - 1
    )


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/userql_bench"
        ),
    )
    parser.add_argument("--sqlite", action="store_true", help="use a SQLite file instead")
    # On shared cores a neighbour's burst can spoil one 5-second window of one server: the
    # median of five shorter interleaved pairs shrugs off two such rounds.
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", default="8,32")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="userql with observability on, run on W1 and W2 beside plain userql ('' for none)",
    )
    args = parser.parse_args()
    variants = [name for name in args.variants.split(",") if name]
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    work = Path(tempfile.mkdtemp(prefix="userql-bench-"))
    url = f"sqlite:///{work / 'bench.sqlite3'}" if args.sqlite else args.database
    print(
        f"preparing {USERS} users in {make_url(url).render_as_string(hide_password=True)}",
        flush=True,
    )
    prepare_database(url)
    token = (
        build_token_service(Settings(database_url=url, jwt_secret=SECRET))
        .issue(user_id=1, role=Access.ADMIN, ttl_seconds=86_400)
        .token
    )
    # The same gunicorn settings for both servers; set these to compare configurations.
    passed = ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_MAX_REQUESTS")
    env = {
        **{name: os.environ[name] for name in passed if name in os.environ},
        "DATABASE_URL": url,
        "USERQL_ENV": "production",
        "JWT_SECRET": SECRET,
        # W4 creates thousands of users a second; the product limit would stop it.
        "RATE_LIMIT_CREATE_USER": "100000000/60",
    }
    sink = contextlib.ExitStack()
    # Where the tracing variant exports; only it turns tracing on (the endpoint alone would
    # turn it on for every userql).
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.enter_context(otlp_sink())
    env["TRACING"] = "off"
    servers = [
        start("userql", "app:create_app()", env, 18_000, work),
        start("baseline", "bench.baseline:create_app()", env, 18_001, work),
    ]
    servers += [
        start(variant, "app:create_app()", {**env, **VARIANTS[variant]}, 18_002 + i, work)
        for i, variant in enumerate(variants)
    ]
    cells: dict[tuple[str, int], Cell] = {}
    try:
        for server in servers:  # warm up both: imports, pools, caches
            wrk(server, "w2_users.lua", 8, 2, token, "warmup")
        run_number = 0
        for workload in args.workloads.split(","):
            for connections in map(int, args.connections.split(",")):
                cell = cells.setdefault((workload, connections), Cell())
                taking_part = [
                    server
                    for server in servers
                    if server.name in ("userql", "baseline") or workload in VARIANT_WORKLOADS
                ]
                runs = [(server.name, server, WORKLOADS[workload]) for server in taking_part]
                if workload in PAIRED:
                    runs.append((PAIRED_RUN, servers[0], WORKLOADS[PAIRED[workload]]))
                for _ in range(args.rounds):
                    for name, server, script in runs:
                        run_number += 1
                        cell.runs.setdefault(name, []).append(
                            measure(
                                server,
                                script,
                                connections,
                                args.seconds,
                                token,
                                url,
                                str(run_number),
                            )
                        )
                print(f"done: {workload} c{connections}", flush=True)
        rss = {server.name: server.peak_rss_mib() for server in servers}
    finally:
        for server in servers:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=60)
        sink.close()
    meta = {
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": (
            f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
        ),
        "database": "SQLite" if args.sqlite else "MariaDB/MySQL",
        "rounds": args.rounds,
        "seconds": args.seconds,
    }
    markdown = report(cells, rss, meta)
    RESULTS.mkdir(exist_ok=True)
    stamp = meta["time"].replace(":", "")
    (RESULTS / f"{stamp}.md").write_text(markdown)
    (RESULTS / "latest.md").write_text(markdown)
    raw = {
        f"{w} c{c}": {k: [vars(r) for r in v] for k, v in cell.runs.items()}
        for (w, c), cell in cells.items()
    }
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps({"meta": meta, "cells": raw, "peak_rss_mib": rss}, indent=2)
    )
    print(markdown)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
