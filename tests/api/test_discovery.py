from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import build_token_service, create_app
from services.auth import Access, TokenService
from settings import Settings

DISCOVERY = "/.well-known/openid-configuration"


def discover(client: FlaskClient, **headers: str) -> dict[str, Any]:
    response = client.get(DISCOVERY, headers=headers)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    body: dict[str, Any] = response.get_json()
    return body


def unverified_claims(tokens: TokenService) -> dict[str, Any]:
    # A token of a session: it carries every claim a token may (`sid` included).
    token = tokens.issue(user_id=7, role=Access.ADMIN, session_id=3).token
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def private_pem(algorithm: str) -> bytes:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_the_document_with_a_shared_secret(client: FlaskClient) -> None:
    assert discover(client) == {
        "issuer": "userql",
        "jwks_uri": "http://localhost/.well-known/jwks.json",
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "claims_supported": ["sub", "roles", "iat", "exp", "iss", "aud", "jti", "sid"],
    }
    # Served all the same: a secret has no public key, so the set it points at is empty.
    assert client.get("/.well-known/jwks.json").get_json() == {"keys": []}


def test_the_issuer_is_the_iss_of_issued_tokens(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    configured = replace(settings, jwt_issuer="https://users.example.com")
    client = create_app(configured, session_factory=session_factory).test_client()
    issuer = discover(client)["issuer"]
    assert issuer == unverified_claims(build_token_service(configured))["iss"]
    assert issuer == "https://users.example.com"


def test_the_claims_supported_are_those_a_token_carries(
    client: FlaskClient, tokens: TokenService
) -> None:
    assert set(discover(client)["claims_supported"]) == set(unverified_claims(tokens))


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_token_verifies_against_the_discovered_keys(
    settings: Settings, session_factory: sessionmaker[Session], algorithm: str
) -> None:
    configured = replace(
        settings,
        jwt_algorithm=algorithm,
        jwt_secret=None,
        jwt_private_key_pem=private_pem(algorithm),
    )
    client = create_app(configured, session_factory=session_factory).test_client()
    document = discover(client)
    assert document["id_token_signing_alg_values_supported"] == [algorithm]
    keys = client.get(urlsplit(document["jwks_uri"]).path)
    assert keys.status_code == 200
    jwks = jwt.PyJWKSet.from_dict(keys.get_json())
    token = build_token_service(configured).issue(user_id=7, role=Access.USER).token
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(
        token,
        key,
        algorithms=document["id_token_signing_alg_values_supported"],
        issuer=document["issuer"],
        audience=configured.jwt_audience,
    )
    assert claims["sub"] == "7"


def test_a_trusted_proxy_gives_the_public_address(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    configured = replace(settings, trusted_proxies=1)
    client = create_app(configured, session_factory=session_factory).test_client()
    # What deploy/haproxy sends: the client's Host as it was, and the scheme it was reached by.
    forwarded = {"Host": "users.example.com", "X-Forwarded-Proto": "https"}
    jwks_uri = discover(client, **forwarded)["jwks_uri"]
    assert jwks_uri == "https://users.example.com/.well-known/jwks.json"
    assert client.get(urlsplit(jwks_uri).path, headers=forwarded).status_code == 200


@pytest.mark.parametrize(
    ("trusted_proxies", "proto"),
    [
        (0, "https"),
        # Behind one proxy, only the value it appended counts, not one the client sent it.
        (1, "https, http"),
    ],
)
def test_forwarded_headers_from_a_client_are_ignored(
    settings: Settings,
    session_factory: sessionmaker[Session],
    trusted_proxies: int,
    proto: str,
) -> None:
    configured = replace(settings, trusted_proxies=trusted_proxies)
    client = create_app(configured, session_factory=session_factory).test_client()
    document = discover(
        client,
        **{
            "X-Forwarded-Proto": proto,
            "X-Forwarded-Host": "attacker.example",
            "X-Forwarded-Prefix": "/x",
        },
    )
    assert document["jwks_uri"] == "http://localhost/.well-known/jwks.json"
