"""The docs keep up with the code: the README stays short, and docs/architecture.md names
every package and module of the house."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HOUSE = ("cli", "web", "schema", "resolvers", "services", "db")


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 350


def test_the_architecture_names_every_module() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    modules = ["app.py", "settings.py"] + [
        str(path.relative_to(ROOT))
        for package in HOUSE
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "__init__.py"
    ]
    packages = [f"{package}/" for package in HOUSE] + ["schema/types/", "schema/fast/"]
    assert [name for name in modules + packages if f"`{name}`" not in architecture] == []


def test_the_readmes_links_into_docs_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in (
        "docs/api.md",
        "docs/architecture.md",
        "docs/performance.md",
        "docs/federation.md",
    ):
        assert f"]({target}" in readme
        assert (ROOT / target).is_file()
