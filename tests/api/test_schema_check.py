from pathlib import Path

import pytest

from cli import main
from cli.schema_tools import ROLE_SCHEMAS_END, ROLE_SCHEMAS_START, role_schemas_markdown
from schema.root import schema_for
from services.auth import Access

ROOT = Path(__file__).resolve().parent.parent.parent
COMMITTED = (ROOT / "schema.graphql").read_text()


def check(tmp_path: Path, sdl: str, acknowledged: str = "") -> int:
    against = tmp_path / "schema.graphql"
    against.write_text(sdl)
    ack = tmp_path / "ack.txt"
    ack.write_text(acknowledged)
    return main(["schema", "check", "--against", str(against), "--acknowledged", str(ack)])


def test_the_committed_schema_has_no_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path, COMMITTED) == 0
    assert "no breaking changes" in capsys.readouterr().out


def test_a_removed_field_is_breaking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The committed schema had a field the code no longer has.
    old = COMMITTED.replace("type User {\n", "type User {\n  nickname: String\n", 1)
    assert check(tmp_path, old) == 1
    out = capsys.readouterr()
    assert "BREAKING: FIELD_REMOVED: Field User.nickname was removed." in out.out
    assert "1 breaking change(s)" in out.err


def test_a_changed_type_is_breaking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = COMMITTED.replace(
        "type User {\n  id: ID!\n  name: String!", "type User {\n  id: ID!\n  name: Int!"
    )
    assert old != COMMITTED
    assert check(tmp_path, old) == 1
    assert "BREAKING: FIELD_CHANGED_KIND: Field User.name changed type from Int! to String!." in (
        capsys.readouterr().out
    )


def test_an_added_optional_field_is_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The code has a nullable field the committed schema did not: an addition.
    old = COMMITTED.replace("  email: String @requiresRole(role: ADMIN, orSelf: true)\n", "")
    assert old != COMMITTED
    assert check(tmp_path, old) == 0
    assert "BREAKING" not in capsys.readouterr().out


def test_an_added_optional_argument_is_dangerous_not_breaking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = COMMITTED.replace(
        "  users(\n    first: Int = 20\n    after: String = null\n",
        "  users(\n    first: Int = 20\n",
    )
    assert old != COMMITTED
    assert check(tmp_path, old) == 0
    assert "dangerous: OPTIONAL_ARG_ADDED: An optional argument Query.users(after:) was added." in (
        capsys.readouterr().out
    )


def test_an_acknowledged_breaking_change_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = COMMITTED.replace("type User {\n", "type User {\n  nickname: String\n", 1)
    acknowledged = "# on purpose\nFIELD_REMOVED: Field User.nickname was removed.\n"
    assert check(tmp_path, old, acknowledged) == 0
    assert "breaking (acknowledged): FIELD_REMOVED" in capsys.readouterr().out


def test_each_role_sees_only_what_it_may_use() -> None:
    anonymous, user, admin = (
        schema_for(role) for role in (Access.ANONYMOUS, Access.USER, Access.ADMIN)
    )
    assert "me: User" in anonymous
    assert "users(" not in anonymous
    assert "createUser" not in anonymous
    assert "signInWithGoogle" in anonymous
    assert "users(" in user
    assert "createUser" not in user
    assert "CreateUserInput" not in user
    assert "createUser(input: CreateUserInput!): CreateUserResult!" in admin


def test_the_api_doc_role_schemas_are_current() -> None:
    api_doc = (ROOT / "docs" / "api.md").read_text()
    assert ROLE_SCHEMAS_START + role_schemas_markdown() + ROLE_SCHEMAS_END in api_doc, (
        "docs/api.md's role schemas are stale: run `make schema`"
    )
