"""The import contracts for the two top-level modules, app.py and settings.py, which
import-linter cannot take as roots (it wants packages): `cli → app → web/settings → schema →
resolvers → services → db`, and Flask only at the HTTP edge and in the composition root."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HOUSE = ("cli", "web", "schema", "resolvers", "services", "db")
HTTP = {"flask", "werkzeug", "flask_cors"}


def imported(path: Path) -> set[str]:
    """The top-level names a module imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.partition(".")[0])
    return names


def modules() -> dict[str, set[str]]:
    found = {path.name: imported(path) for path in (ROOT / "app.py", ROOT / "settings.py")}
    for package in HOUSE:
        for path in (ROOT / package).rglob("*.py"):
            found[str(path.relative_to(ROOT))] = imported(path)
    return found


def test_only_the_edge_and_the_root_know_flask() -> None:
    knowing = {name for name, imports in modules().items() if imports & HTTP}
    assert knowing == {"app.py"} | {name for name in knowing if name.startswith("web/")}
    assert any(name.startswith("web/") for name in knowing)


def test_settings_sits_below_the_root_and_beside_the_edge() -> None:
    assert imported(ROOT / "settings.py") & {"app", "cli", "web"} == set()


def test_the_root_does_not_know_the_command_line() -> None:
    assert "cli" not in imported(ROOT / "app.py")


def test_nothing_below_the_root_imports_it_or_the_settings() -> None:
    below = {
        name: imports & {"app", "settings", "cli"}
        for name, imports in modules().items()
        if not name.startswith("cli/") and name not in {"app.py", "settings.py"}
    }
    assert {name: found for name, found in below.items() if found} == {}


def imported_modules(path: Path) -> set[str]:
    """The full names of the modules a module imports from."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_only_the_schema_builder_imports_the_fast_path() -> None:
    paths = [ROOT / "app.py", ROOT / "settings.py"]
    paths += [path for package in HOUSE for path in (ROOT / package).rglob("*.py")]
    importing = {
        str(path.relative_to(ROOT))
        for path in paths
        if any(name.startswith("schema.fast") for name in imported_modules(path))
        and not str(path.relative_to(ROOT)).startswith("schema/fast/")
    }
    assert importing == {"schema/root.py"}
