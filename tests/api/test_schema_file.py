from pathlib import Path

from cli.schema_tools import MATRIX_END, MATRIX_START
from schema.permissions import permission_matrix
from schema.root import schema


def test_the_committed_schema_is_current(project_root: Path) -> None:
    committed = (project_root / "schema.graphql").read_text(encoding="utf-8")
    assert committed == schema.as_str() + "\n", "schema.graphql is stale: run `make schema`"


def test_the_readme_permission_matrix_is_current(project_root: Path) -> None:
    readme = (project_root / "README.md").read_text(encoding="utf-8")
    expected = MATRIX_START + permission_matrix() + MATRIX_END
    assert expected in readme, "the permission matrix in README.md is stale: run `make schema`"
