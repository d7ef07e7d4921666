"""What the Docker image does, without Docker: build the wheel from exactly the files the
Dockerfile copies, install it into a bare prefix, and migrate a database from there."""

import shlex
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def dockerfile_build_context() -> list[str]:
    """The sources the build stage copies (COPY lines without --from)."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *copied, _destination = shlex.split(line)[1:]
            sources += copied
    return sources


def test_the_image_recipe_builds_a_self_contained_wheel(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in dockerfile_build_context():
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    wheels = tmp_path / "wheels"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("userql-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "app.py" in names
    assert any(name.endswith("share/userql/alembic/env.py") for name in names)
    assert not any(name.startswith("tests/") for name in names)
    # GraphiQL travels inside the package, licences included.
    for asset in (
        "schema/graphiql/index.html",
        "schema/graphiql/userql-graphiql.js",
        "schema/graphiql/NOTICE",
        "schema/graphiql/vendor/graphiql@3.8.3/graphiql.min.js",
        "schema/graphiql/vendor/graphiql@3.8.3/LICENSE",
        "schema/graphiql/vendor/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js",
    ):
        assert asset in names, asset
    assert "schema/graphiql/package.json" not in names

    # A bare interpreter prefix; the dependencies come from this venv through a .pth file.
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(prefix)}))
    (site_packages / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # The prefix's own interpreter runs pip (borrowed through the .pth): this checkout's
    # editable userql is then "outside the environment" and pip leaves it alone.
    subprocess.run(
        [
            str(prefix / "bin" / "python"),
            *pip[1:],
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    database = tmp_path / "installed.sqlite3"
    run = subprocess.run(
        [
            str(prefix / "bin" / "python"),
            "-c",
            "import sys, app; print(app.__file__); sys.exit(app.main(['migrate']))",
        ],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": f"sqlite:///{database}",
            "USERQL_ENV": "test",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0].startswith(str(prefix))  # not this checkout's app.py
    tables = {row[0] for row in sqlite3.connect(database).execute("SELECT name FROM sqlite_master")}
    assert {"users", "alembic_version"} <= tables
