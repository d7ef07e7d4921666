from collections.abc import Iterable, Iterator

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

Selection = SelectedField | FragmentSpread | InlineFragment


def selected_names(selections: Iterable[Selection], *path: str) -> set[str]:
    """The names of the fields selected at `path` below `selections` (a resolver's
    `info.selected_fields`), through fragments.

    Directives are not evaluated, so a field under `@skip` counts: the result may name more
    fields than run, never fewer, which is what deciding what to load needs.
    """
    level = [child for field in _fields(selections) for child in field.selections]
    for name in path:
        level = [
            child for field in _fields(level) if field.name == name for child in field.selections
        ]
    return {field.name for field in _fields(level)}


def _fields(selections: Iterable[Selection]) -> Iterator[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        else:
            yield from _fields(selection.selections)
