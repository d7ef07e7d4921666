import pytest

from resolvers.auth import needs_caller_row


@pytest.mark.parametrize(
    "document",
    [
        "{ me { id } }",
        "{me{id}}",
        "{ caller: me { id } }",
        "query { ...F } fragment F on Query {\n\tme { id } }",
        # Not a selection of `me`, but telling them apart would take a parse: reading the
        # whole row for these costs a few columns, never a wrong answer.
        'query me { user(id: "me") { id } }',
    ],
)
def test_a_document_that_may_select_me_needs_the_callers_row(document: str) -> None:
    assert needs_caller_row(document)


@pytest.mark.parametrize(
    "document",
    [
        "{ user(id: 1) { name } }",
        "{ users { edges { node { id name email } } } }",
        "{ meta }",
        "{ _me }",
        "{ me2 }",
        "{ user(id: 1) { some: name } }",
    ],
)
def test_a_document_that_cannot_select_me_does_not(document: str) -> None:
    assert not needs_caller_row(document)
