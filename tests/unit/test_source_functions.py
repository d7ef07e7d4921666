"""Which computed fields the one-pass completion may read itself: only those Strawberry would
call with the source alone, and each is called as Strawberry calls it."""

from typing import Any

import strawberry
from strawberry.extensions import FieldExtension
from strawberry.types.base import get_object_definition

from schema.fast import source_function


class Shout(FieldExtension):
    def resolve(self, next_: Any, source: Any, info: strawberry.Info, **kwargs: Any) -> Any:
        return str(next_(source, info, **kwargs)).upper()


@strawberry.type
class Item:
    n: int

    @strawberry.field
    def by_self(self) -> str:
        return f"self {self.n}"

    @strawberry.field
    @staticmethod
    def by_root(root: "Item") -> str:
        return f"root {root.n}"

    @strawberry.field
    @staticmethod
    def by_parent(parent: strawberry.Parent["Item"]) -> str:
        return f"parent {parent.n}"

    @strawberry.field
    @staticmethod
    def by_keyword(*, root: "Item") -> str:
        return f"keyword {root.n}"

    @strawberry.field
    def with_info(self, info: strawberry.Info) -> str:
        return info.field_name

    @strawberry.field
    def with_argument(self, times: int) -> str:
        return str(self.n * times)

    @strawberry.field
    @staticmethod
    def constant() -> str:
        return "constant"

    @strawberry.field
    async def later(self) -> str:
        return "later"

    shouted: str = strawberry.field(resolver=lambda root: f"shouted {root.n}", extensions=[Shout()])


def _function(name: str) -> Any:
    [field] = [f for f in get_object_definition(Item, strict=True).fields if f.name == name]
    return source_function(field)


def test_resolvers_of_the_source_alone_are_read_as_strawberry_calls_them() -> None:
    item = Item(n=3)
    assert _function("by_self")(item) == "self 3"
    assert _function("by_root")(item) == "root 3"
    assert _function("by_parent")(item) == "parent 3"
    assert _function("by_keyword")(item) == "keyword 3"


def test_other_fields_are_left_to_the_general_path() -> None:
    for name in ("n", "with_info", "with_argument", "constant", "later", "shouted"):
        assert _function(name) is None, name
    assert source_function(None) is None
