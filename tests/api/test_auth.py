import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import strawberry
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from graphql import InputObjectTypeDefinitionNode, ObjectTypeDefinitionNode, parse, print_ast
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from schema.permissions import RULES, Rule, apply_rules, field_rules
from schema.root import schema as built_schema
from services import users as user_service
from services.auth import Access, TokenService
from services.unit_of_work import UnitOfWork
from settings import Settings
from tests.conftest import TEST_SECRET
from tests.factories import make_users
from tests.forgery import forge
from tests.graphql import CREATE_USER, authorized, gql

ME = "{ me { id role } }"
GOOD_CLAIMS = {"roles": ["ADMIN"], "iss": "userql", "aud": "userql", "jti": "x"}


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "1", "iat": now, "exp": now + 600, **GOOD_CLAIMS}
    return {key: value for key, value in {**base, **overrides}.items() if value is not None}


def _signed(header: dict[str, Any] | None = None, **claims: Any) -> str:
    return forge(
        header or {"alg": "HS256", "typ": "at+jwt"}, _claims(**claims), TEST_SECRET.encode()
    )


BAD_AUTHORIZATION = {
    "alg none": "Bearer " + forge({"alg": "none", "typ": "at+jwt"}, _claims()),
    "alg NoNe": "Bearer " + forge({"alg": "NoNe", "typ": "at+jwt"}, _claims()),
    "HS512 with the right key": "Bearer " + _signed({"alg": "HS512", "typ": "at+jwt"}),
    "wrong key": "Bearer "
    + forge({"alg": "HS256", "typ": "at+jwt"}, _claims(), b"not-the-secret-but-32-bytes-long!"),
    "expired": "Bearer " + _signed(exp=int(time.time()) - 3600),
    "not yet valid": "Bearer " + _signed(nbf=int(time.time()) + 3600),
    "missing exp": "Bearer " + _signed(exp=None),
    "wrong aud": "Bearer " + _signed(aud="someone-else"),
    "missing iss": "Bearer " + _signed(iss=None),
    "kid injection": "Bearer " + _signed({"alg": "HS256", "typ": "at+jwt", "kid": "x' OR 1=1"}),
    "jku injection": "Bearer "
    + _signed({"alg": "HS256", "typ": "at+jwt", "jku": "http://127.0.0.1:1/k"}),
    "no scheme": _signed(),
    "another scheme": "Basic YWRtaW46YWRtaW4=",
    "empty token": "Bearer ",
    "two tokens": f"Bearer {_signed()} {_signed()}",
    "very long": "Bearer " + "a" * 100_000,
    "not a JWT": "Bearer hello",
}


@pytest.mark.parametrize("header", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
def test_bad_credentials_get_401_unauthenticated(
    client: FlaskClient, admin: models.User, header: str
) -> None:
    response = client.post("/graphql", json={"query": ME}, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    [error] = response.get_json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "Traceback" not in response.get_data(as_text=True)


def test_two_authorization_headers_are_refused(client: FlaskClient, admin: models.User) -> None:
    token = _signed()
    response = client.post(
        "/graphql",
        json={"query": ME},
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    )
    assert response.status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_case_insensitive(
    client: FlaskClient, admin: models.User, tokens: TokenService, scheme: str
) -> None:
    token = tokens.issue(user_id=admin.id, role=Access.ADMIN).token
    response = client.post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"{scheme} {token}"}
    )
    assert response.get_json() == {"data": {"me": {"id": str(admin.id), "role": "ADMIN"}}}


def test_a_deleted_user_loses_access_at_once(
    admin_client: FlaskClient, admin: models.User, session_factory: sessionmaker[Session]
) -> None:
    assert gql(admin_client, ME)["data"]["me"]["id"] == str(admin.id)
    with UnitOfWork(session_factory) as uow:
        uow.session.delete(uow.session.get(models.User, admin.id))
        uow.commit()
    response = admin_client.post("/graphql", json={"query": ME})
    assert response.status_code == 401
    assert response.get_json()["errors"][0]["message"] == (
        "The access token's user no longer exists."
    )


def _set_role(session_factory: sessionmaker[Session], user: models.User, role: models.Role) -> None:
    with UnitOfWork(session_factory) as uow:
        stored = uow.session.get(models.User, user.id)
        assert stored is not None
        stored.role = role
        uow.commit()


def _create(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    body = {"query": CREATE_USER, "variables": {"input": fields}}
    result: dict[str, Any] = client.post("/graphql", json=body).get_json()
    return result


NEW_USER = {"name": "New", "email": "new@example.com"}


def test_a_demoted_admin_loses_admin_rights_at_once(
    admin_client: FlaskClient, admin: models.User, session_factory: sessionmaker[Session]
) -> None:
    _set_role(session_factory, admin, models.Role.USER)
    body = _create(admin_client, **NEW_USER)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Still a signed-in user, with a user's rights.
    assert gql(admin_client, ME)["data"]["me"]["role"] == "USER"


def test_a_token_can_narrow_rights(
    client: FlaskClient, admin: models.User, tokens: TokenService
) -> None:
    narrow = tokens.issue(user_id=admin.id, role=Access.USER).token
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {narrow}"
    assert _create(client, **NEW_USER)["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_token_cannot_widen_rights(
    client: FlaskClient, member: models.User, tokens: TokenService
) -> None:
    wide = tokens.issue(user_id=member.id, role=Access.ADMIN).token
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {wide}"
    assert _create(client, **NEW_USER, role="ADMIN")["errors"][0]["extensions"]["code"] == (
        "FORBIDDEN"
    )


@pytest.mark.parametrize(
    ("caller", "code"), [("anonymous", "UNAUTHENTICATED"), ("user", "FORBIDDEN")]
)
def test_only_admins_create_users(
    request: pytest.FixtureRequest,
    session_factory: sessionmaker[Session],
    caller: str,
    code: str,
) -> None:
    client: FlaskClient = request.getfixturevalue(
        "client" if caller == "anonymous" else "user_client"
    )
    before = user_service.count_users(UnitOfWork(session_factory))
    body = _create(client, name="Sneaky", email="sneaky@example.com", role="ADMIN")
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == code
    assert error["path"] == ["createUser"]
    assert user_service.count_users(UnitOfWork(session_factory)) == before


def test_admins_do_create_users(admin_client: FlaskClient) -> None:
    body = _create(admin_client, **NEW_USER)
    assert body["data"]["createUser"]["__typename"] == "CreateUserSuccess"


def test_a_user_sees_only_their_own_email(
    user_client: FlaskClient, member: models.User, session_factory: sessionmaker[Session]
) -> None:
    others = make_users(session_factory, 2)
    body = user_client.post(
        "/graphql", json={"query": "{ users { edges { node { id email } } } }"}
    ).get_json()
    nodes = [edge["node"] for edge in body["data"]["users"]["edges"]]
    assert nodes == [
        {"id": str(member.id), "email": "member@example.com"},
        *({"id": str(other.id), "email": None} for other in others),
    ]
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["users", "edges", 1, "node", "email"], "FORBIDDEN"),
        (["users", "edges", 2, "node", "email"], "FORBIDDEN"),
    ]


def test_an_admin_sees_every_email(
    admin_client: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    make_users(session_factory, 2)
    body = gql(admin_client, "{ users { edges { node { email } } } }")
    assert all(edge["node"]["email"] for edge in body["data"]["users"]["edges"])


@pytest.mark.parametrize("query", ["{ users { totalCount } }", '{ user(id: "1") { id } }'])
def test_anonymous_callers_must_sign_in(client: FlaskClient, query: str) -> None:
    body = gql(client, query, expect_errors=True)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"].startswith("Sign in to use Query.")


def test_the_jwks_endpoint(client: FlaskClient) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.get_json() == {"keys": []}
    assert response.headers["Cache-Control"] == "public, max-age=300"


def test_the_jwks_endpoint_with_rs256(
    settings: Settings, session_factory: sessionmaker[Session], admin: models.User
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    configured = replace(settings, jwt_algorithm="RS256", jwt_secret=None, jwt_private_key_pem=pem)
    app: Flask = create_app(configured, session_factory=session_factory)
    [jwk] = app.test_client().get("/.well-known/jwks.json").get_json()["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    tokens = TokenService(
        algorithm="RS256",
        issuer="userql",
        audience="userql",
        ttl_seconds=60,
        leeway_seconds=0,
        private_key_pem=pem,
    )
    client = authorized(app.test_client(), tokens, admin)
    assert gql(client, ME)["data"]["me"]["role"] == "ADMIN"


def test_every_root_field_needs_a_rule() -> None:
    @strawberry.type
    class Query:
        covered: int
        forgotten: int

    with pytest.raises(LookupError, match=r"no access rule for Query\.forgotten"):
        apply_rules(Query, rules={"Query.covered": Rule(Access.USER)})


def test_a_rule_must_name_a_field() -> None:
    @strawberry.type
    class Query:
        covered: int

    with pytest.raises(LookupError, match=r"fields that do not exist: Query\.typo"):
        apply_rules(
            Query, rules={"Query.covered": Rule(Access.USER), "Query.typo": Rule(Access.USER)}
        )


def test_the_sdl_shows_every_rule(project_root: Path) -> None:
    document = parse((project_root / "schema.graphql").read_text())
    shown = {}

    def show(coordinate: str, directives: Any) -> None:
        for directive in directives or ():
            arguments = {a.name.value: print_ast(a.value) for a in directive.arguments or ()}
            shown[coordinate] = (directive.name.value, arguments)

    for definition in document.definitions:
        if isinstance(definition, ObjectTypeDefinitionNode):
            for field in definition.fields or ():
                coordinate = f"{definition.name.value}.{field.name.value}"
                show(coordinate, field.directives)
                for argument in field.arguments or ():
                    show(f"{coordinate}({argument.name.value}:)", argument.directives)
        if isinstance(definition, InputObjectTypeDefinitionNode):
            for input_field in definition.fields or ():
                show(f"{definition.name.value}.{input_field.name.value}", input_field.directives)
    assert shown == {
        coordinate: ("requiresRole", {"role": rule.role.name, "orSelf": str(rule.or_self).lower()})
        for coordinate, rule in RULES.items()
    }


@pytest.mark.parametrize(
    ("coordinate", "rule", "complaint"),
    [
        ("CreateUserResult.user", Rule(Access.ADMIN), "object types"),
        (
            "PageInfo.endCursor",
            Rule(Access.ADMIN, or_self=True),
            "or_self applies to fields of User",
        ),
    ],
)
def test_type_field_rules_that_cannot_hold_refuse_to_install(
    coordinate: str, rule: Rule, complaint: str
) -> None:
    # "Self" is the user the field is read on: only a User has one.
    with pytest.raises(TypeError, match=complaint):
        field_rules(built_schema.graphql_schema, {coordinate: rule})
