"""schema.fast relies on internals of graphql-core and Strawberry: the installed versions must
be within the range pyproject declares, the one the fast path was verified on."""

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent.parent
VERIFIED = ("strawberry-graphql", "graphql-core")


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {requirement.name: requirement for requirement in requirements}


@pytest.mark.parametrize("name", VERIFIED)
def test_the_fast_path_s_libraries_are_pinned_to_a_range(name: str) -> None:
    operators = {spec.operator for spec in declared()[name].specifier}
    assert operators & {">=", ">", "=="}, f"{name} needs a lower bound in pyproject.toml"
    assert operators & {"<", "<=", "==", "~="}, f"{name} needs an upper bound in pyproject.toml"


@pytest.mark.parametrize("name", VERIFIED)
def test_the_installed_version_is_one_the_fast_path_was_verified_on(name: str) -> None:
    requirement, installed = declared()[name], Version(version(name))
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{name} {installed} is installed, but schema.fast was verified on "
        f"{requirement.specifier} (pyproject.toml). Check what schema/fast/__init__.py lists "
        f"against the new version, then widen the range."
    )
