from collections.abc import Iterable

import strawberry
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from schema.context import Context


def selects(info: strawberry.Info[Context, None], name: str) -> bool:
    """Whether the current field's selection asks for `name`, directly or through fragments."""
    return any(_contains(field.selections, name) for field in info.selected_fields)


def _contains(
    selections: Iterable[SelectedField | FragmentSpread | InlineFragment], name: str
) -> bool:
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == name:
                return True
        elif _contains(selection.selections, name):
            return True
    return False
