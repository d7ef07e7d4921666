from pathlib import Path

from schema.root import schema


def test_the_committed_schema_is_current(project_root: Path) -> None:
    committed = (project_root / "schema.graphql").read_text(encoding="utf-8")
    assert committed == schema.as_str() + "\n", "schema.graphql is stale: run `make schema`"
