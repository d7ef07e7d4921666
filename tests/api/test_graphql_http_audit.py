"""The graphql-http audit suite (npm), against a real server: every MUST and SHOULD passes."""

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from schema.limits import IntrospectionPolicy
from settings import Settings
from tests.servers import serve_in_thread

AUDIT = Path(__file__).resolve().parent.parent / "node"


@pytest.fixture
def url(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[str]:
    # One audit asks for __type, so introspection is open for this run.
    configured = replace(settings, introspection=IntrospectionPolicy.EVERYONE)
    with serve_in_thread(create_app(configured, session_factory=session_factory)) as url:
        yield url


def test_every_must_and_should_audit_passes(url: str) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed for the graphql-http audit"
    assert (AUDIT / "node_modules" / "graphql-http").is_dir(), "run `make install` (npm ci)"
    run = subprocess.run(
        [node, str(AUDIT / "audit.mjs"), url], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    results = [json.loads(line) for line in run.stdout.splitlines()]
    failures = [
        f"{r['id']} {r['name']}: {r['reason']}"
        for r in results
        if r["status"] != "ok" and not r["name"].startswith("MAY")
    ]
    assert failures == []
    assert len(results) >= 60
