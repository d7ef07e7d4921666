"""What the image holds, without the image: the files .dockerignore lets through, laid out
where the Dockerfile puts them, run from another directory with PYTHONPATH as the image
sets it. The image tests (test_image.py) do the same inside the real image."""

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def build_context() -> tuple[list[str], list[str]]:
    """The paths .dockerignore lets through, and the ones it then excludes again. It is
    written as `*`, then `!path` lines, then exclusions: that is all this reads."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the build context is an allow-list"
    allowed = [line[1:].rstrip("/") for line in lines[1:] if line.startswith("!")]
    excluded = [line for line in lines[1:] if not line.startswith("!")]
    return allowed, excluded


def copy_context(target: Path) -> None:
    allowed, excluded = build_context()
    for name in allowed:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    for pattern in excluded:
        if not pattern.startswith("**"):
            (target / pattern).unlink()


def test_every_package_of_the_house_reaches_the_image() -> None:
    allowed, _ = build_context()
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(allowed)
    modules = {path.name for path in ROOT.glob("*.py")}
    assert modules <= set(allowed), "every top-level module (app.py, settings.py, …)"
    assert {"alembic", "alembic.ini"} <= set(allowed)


def test_the_source_tree_migrates_from_anywhere(tmp_path: Path) -> None:
    tree = tmp_path / "srv" / "userql"
    tree.mkdir(parents=True)
    copy_context(tree)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = tmp_path / "image.sqlite3"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, app, cli; print(app.__file__); sys.exit(cli.main(['migrate']))",
        ],
        cwd=elsewhere,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(tree),
            "DATABASE_URL": f"sqlite:///{database}",
            "USERQL_ENV": "test",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0] == str(tree / "app.py")  # not this checkout's
    tables = {row[0] for row in sqlite3.connect(database).execute("SELECT name FROM sqlite_master")}
    assert {"users", "alembic_version"} <= tables


def test_graphiql_reaches_the_image_without_its_build_files(tmp_path: Path) -> None:
    copy_context(tmp_path)
    graphiql = tmp_path / "schema" / "graphiql"
    for asset in (
        "index.html",
        "userql-graphiql.js",
        "NOTICE",
        "vendor/graphiql@3.8.3/graphiql.min.js",
        "vendor/graphiql@3.8.3/LICENSE",
    ):
        assert (graphiql / asset).is_file(), asset
    assert not (graphiql / "package.json").exists()
