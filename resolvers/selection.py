from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import strawberry
from graphql import FieldNode
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from services.documents import Lru

Selection = SelectedField | FragmentSpread | InlineFragment

# The names depend on the document alone, and a document parsed once (schema.limits) brings
# the very same field nodes to every request that sends it: kept by those nodes' identities.
# Each entry holds its nodes, so no other node can take one of their ids meanwhile.
_KEPT_NAMES: Lru[tuple[tuple[int, ...], tuple[str, ...]], tuple[list[FieldNode], frozenset[str]]]
_KEPT_NAMES = Lru(1024)


class NodesInfo(strawberry.Info[Any, Any]):
    """An Info that names the document's field nodes it resolves, which Strawberry's does only
    privately: the schema's builder configures one (see schema.fast)."""

    @property
    def field_nodes(self) -> Sequence[FieldNode]:
        raise NotImplementedError


def selected_names(info: strawberry.Info[Any, Any], *path: str) -> frozenset[str]:
    """The names of the fields selected at `path` below the field `info` resolves, through
    fragments.

    Directives are not evaluated, so a field under `@skip` counts: the result may name more
    fields than run, never fewer, which is what deciding what to load needs.
    """
    if not isinstance(info, NodesInfo):
        return _names_at(info.selected_fields, path)
    nodes = info.field_nodes
    key = (tuple(map(id, nodes)), path)
    kept = _KEPT_NAMES.get(key)
    if kept is not None:
        return kept[1]
    names = _names_at(info.selected_fields, path)
    _KEPT_NAMES.put(key, (list(nodes), names))
    return names


def _names_at(selections: Iterable[Selection], path: tuple[str, ...]) -> frozenset[str]:
    level = [child for field in _fields(selections) for child in field.selections]
    for name in path:
        level = [
            child for field in _fields(level) if field.name == name for child in field.selections
        ]
    return frozenset(field.name for field in _fields(level))


def _fields(selections: Iterable[Selection]) -> Iterator[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        else:
            yield from _fields(selection.selections)
