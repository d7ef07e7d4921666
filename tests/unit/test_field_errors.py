import logging

import marshmallow
import pytest
from graphql import GraphQLError

from schema.errors import _coded, field_errors, mask_unexpected
from schema.types.errors import FieldError


def test_messages_become_one_field_error_each_with_camel_case_paths() -> None:
    error = marshmallow.ValidationError(
        {
            "name": ["Must not be blank."],
            "home_address": {"postal_code": ["Not a valid cursor.", "Something new."]},
        }
    )
    assert field_errors(error, root=["input"]) == [
        FieldError(path=["input", "name"], message="Must not be blank.", code="BLANK"),
        FieldError(
            path=["input", "homeAddress", "postalCode"],
            message="Not a valid cursor.",
            code="INVALID_CURSOR",
        ),
        FieldError(
            path=["input", "homeAddress", "postalCode"], message="Something new.", code="INVALID"
        ),
    ]


def test_an_error_without_a_code_is_masked_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # graphql-core's own completion errors ("Cannot return null for non-nullable field")
    # sit at a path and carry no original error: a server fault, not the client's.
    error = GraphQLError(
        "Cannot return null for non-nullable field User.name.", path=["user", "name"]
    )
    with caplog.at_level(logging.ERROR, logger="schema.errors"):
        masked = mask_unexpected(_coded(error, validation=False, strip=False))
    assert masked.message == "Internal server error"
    assert masked.extensions == {"code": "INTERNAL"}
    assert masked.path == ["user", "name"]
    assert "Cannot return null" in caplog.text


def test_a_coded_error_passes_unchanged() -> None:
    error = GraphQLError("Nope.", extensions={"code": "BAD_USER_INPUT"})
    assert mask_unexpected(error) is error
