"""RFC 8725 in practice: every forged or broken token is refused, and only that."""

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.auth import (
    VERIFIED_TOKENS_KEPT,
    Access,
    Claims,
    TokenService,
    bearer_token,
    key_id,
)
from services.errors import Unauthenticated
from tests.forgery import forge, segment

SECRET = "unit-test-secret-of-at-least-32-bytes!"
NOW = 1_800_000_000


def hs256(**overrides: Any) -> TokenService:
    options: dict[str, Any] = {
        "algorithm": "HS256",
        "issuer": "userql",
        "audience": "userql",
        "ttl_seconds": 3600,
        "leeway_seconds": 30,
        "secret": SECRET,
        "clock": lambda: NOW,
    }
    return TokenService(**{**options, **overrides})


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "sub": "7",
        "roles": ["USER"],
        "iat": int(time.time()) - 10,
        "exp": int(time.time()) + 600,
        "iss": "userql",
        "aud": "userql",
        "jti": "abc",
    }
    return {key: value for key, value in {**base, **overrides}.items() if value is not None}


HEADER = {"alg": "HS256", "typ": "at+jwt"}


def who(claims: Claims) -> tuple[int, Access]:
    return claims.user_id, claims.role


def sign(payload: dict[str, Any], **header: Any) -> str:
    return forge({**HEADER, **header}, payload, SECRET.encode())


def test_an_issued_token_verifies() -> None:
    service = hs256(clock=time.time)
    issued = service.issue(user_id=42, role=Access.ADMIN)
    assert who(service.verify(issued.token)) == (42, Access.ADMIN)
    header = jwt.get_unverified_header(issued.token)
    assert header == {"alg": "HS256", "typ": "at+jwt"}
    payload = jwt.decode(issued.token, options={"verify_signature": False})
    assert payload["roles"] == ["USER", "ADMIN"]
    assert payload["exp"] - int(payload["iat"]) == 3600
    assert "sid" not in payload
    assert (payload["iss"], payload["aud"], payload["sub"]) == ("userql", "userql", "42")
    assert len(payload["jti"]) == 32
    assert int(issued.expires_at.timestamp()) == payload["exp"]


def test_the_hand_made_control_token_verifies() -> None:
    # Proves the forgeries below fail for the one thing each changes.
    assert who(hs256(clock=time.time).verify(sign(claims()))) == (7, Access.USER)


def test_within_the_leeway_is_still_valid() -> None:
    token = sign(claims(exp=int(time.time()) - 20))
    assert hs256(clock=time.time).verify(token).user_id == 7


def _tamper(token: str) -> str:
    header, _payload, signature = token.split(".")
    return f"{header}.{segment(claims(roles=['ADMIN'], sub='1'))}.{signature}"


FORGERIES = {
    "alg none": forge({"alg": "none", "typ": "at+jwt"}, claims()),
    "alg None": forge({"alg": "None", "typ": "at+jwt"}, claims()),
    "alg NONE": forge({"alg": "NONE", "typ": "at+jwt"}, claims()),
    "alg nOnE": forge({"alg": "nOnE", "typ": "at+jwt"}, claims()),
    "wrong signature": forge(HEADER, claims(), b"another-secret-of-at-least-32-bytes!!"),
    "tampered payload": _tamper(sign(claims())),
    "expired": sign(claims(exp=int(time.time()) - 120)),
    "not yet valid": sign(claims(nbf=int(time.time()) + 600)),
    "issued in the future": sign(claims(iat=int(time.time()) + 600)),
    "exp not a number": sign(claims(exp=str(int(time.time()) + 600))),
    "exp true": sign(claims(exp=True)),
    "nbf not a number": sign(claims(nbf="yesterday")),
    "nbf null": sign({**claims(), "nbf": None}),
    "missing exp": sign(claims(exp=None)),
    "missing iat": sign(claims(iat=None)),
    "missing sub": sign(claims(sub=None)),
    "wrong iss": sign(claims(iss="evil")),
    "missing iss": sign(claims(iss=None)),
    "wrong aud": sign(claims(aud="other-service")),
    "missing aud": sign(claims(aud=None)),
    "HS256 with an empty key": forge(HEADER, claims(), b""),
    "HS384 with the right key": forge({"alg": "HS384", "typ": "at+jwt"}, claims(), SECRET.encode()),
    "HS512 with the right key": forge({"alg": "HS512", "typ": "at+jwt"}, claims(), SECRET.encode()),
    "kid path injection": sign(claims(), kid="../../../../dev/null"),
    "kid SQL injection": sign(claims(), kid="' OR '1'='1"),
    "jku header": sign(claims(), jku="http://127.0.0.1:1/jwks.json"),
    "jwk header": sign(claims(), jwk={"kty": "oct", "k": "c2VjcmV0"}),
    "x5u header": sign(claims(), x5u="http://127.0.0.1:1/cert.pem"),
    "no typ": forge({"alg": "HS256"}, claims(), SECRET.encode()),
    "typ JWT (an ID token)": sign(claims(), typ="JWT"),
    "sub not a number": sign(claims(sub="admin")),
    "sub not a string": sign(claims(sub=7)),
    "roles missing": sign(claims(roles=None)),
    "roles empty": sign(claims(roles=[])),
    "roles unknown": sign(claims(roles=["ROOT"])),
    "roles a string": sign(claims(roles="ADMIN")),
    "two segments": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0",
    "four segments": sign(claims()) + ".extra",
    "not base64": "ab$.cd.ef",
    "header not JSON": "bm90anNvbg.e30.c2ln",
    "header not an object": "W10.e30.c2ln",
    "header not UTF-8": "_w.e30.c2ln",
    "header cut short": "eyJhbGciOiJIUzI1NiJ9a.e30.c2ln",
    "very long": "a" * 5000 + "." + "b" * 10 + "." + "c" * 10,
    "empty": "",
}


@pytest.mark.parametrize("token", FORGERIES.values(), ids=FORGERIES.keys())
def test_forgeries_are_refused(token: str) -> None:
    with pytest.raises(Unauthenticated):
        hs256(clock=time.time).verify(token)


def test_an_expired_token_says_so() -> None:
    with pytest.raises(Unauthenticated, match="has expired"):
        hs256(clock=time.time).verify(FORGERIES["expired"])


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_remembered_token_still_expires_on_time() -> None:
    clock = Clock()
    service = hs256(clock=clock)
    token = service.issue(user_id=5, role=Access.USER, ttl_seconds=60).token
    assert service.verify(token).user_id == 5
    clock.now += 60 + 30 - 1  # the last second of the leeway
    assert service.verify(token).user_id == 5
    clock.now += 1
    with pytest.raises(Unauthenticated, match="has expired"):
        service.verify(token)


def test_a_token_is_verified_once_and_its_claims_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = hs256(clock=time.time)
    token = service.issue(user_id=8, role=Access.ADMIN).token
    decodes = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decodes.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    assert [who(service.verify(token)) for _ in range(3)] == [(8, Access.ADMIN)] * 3
    assert len(decodes) == 1
    # The token itself is the key: the same claims under a forged signature are checked anew.
    with pytest.raises(Unauthenticated):
        service.verify(_tamper(token))
    with pytest.raises(Unauthenticated):
        service.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert len(decodes) == 3
    # Another service (another key) remembers nothing of this one's tokens.
    with pytest.raises(Unauthenticated):
        hs256(clock=time.time, secret="another-secret-of-at-least-32-bytes!!").verify(token)


def test_only_signed_tokens_with_valid_claims_are_remembered() -> None:
    service = hs256(clock=time.time)
    for token in FORGERIES.values():
        with pytest.raises(Unauthenticated):
            service.verify(token)
    # Ours, and refused for the time alone: a later call checks the time again.
    timed = {FORGERIES[name] for name in ("expired", "not yet valid", "issued in the future")}
    assert service._verified.cache_info().currsize == len(timed)
    for token in timed:
        assert who(service._verified(token).claims) == (7, Access.USER)


def test_remembered_tokens_are_bounded() -> None:
    service = hs256(clock=time.time)
    first = service.issue(user_id=1, role=Access.USER).token
    for user_id in range(1, VERIFIED_TOKENS_KEPT + 2):
        service.verify(
            first if user_id == 1 else service.issue(user_id=user_id, role=Access.USER).token
        )
    assert service._verified.cache_info().currsize == VERIFIED_TOKENS_KEPT
    assert service.verify(first).user_id == 1  # pushed out, verified again


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return _rsa_key(), _rsa_key()


def asymmetric(algorithm: str, private: bytes, *public: bytes) -> TokenService:
    return TokenService(
        algorithm=algorithm,
        issuer="userql",
        audience="userql",
        ttl_seconds=600,
        leeway_seconds=30,
        private_key_pem=private,
        public_keys_pem=public,
    )


def test_an_rs256_header_against_an_hs256_server(
    rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> None:
    token = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"typ": "at+jwt"})
    with pytest.raises(Unauthenticated):
        hs256(clock=time.time).verify(token)


def test_rs256_keys_rotate_by_kid(rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> None:
    old, new = rsa_keys
    before = asymmetric("RS256", _pem(old))
    old_token = before.issue(user_id=3, role=Access.USER).token
    after = asymmetric("RS256", _pem(new), _public_pem(old))
    new_token = after.issue(user_id=4, role=Access.ADMIN).token
    assert who(after.verify(old_token)) == (3, Access.USER)
    assert who(after.verify(new_token)) == (4, Access.ADMIN)
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(new.public_key())
    # Once the old key is dropped, its tokens stop working.
    with pytest.raises(Unauthenticated):
        asymmetric("RS256", _pem(new)).verify(old_token)
    kids = [key["kid"] for key in after.jwks()["keys"]]
    assert kids == [key_id(new.public_key()), key_id(old.public_key())]
    assert all(k["alg"] == "RS256" and k["use"] == "sig" for k in after.jwks()["keys"])
    # Public members only: no "d", "p", "q" of the private key.
    assert all(set(k) == {"kty", "n", "e", "kid", "use", "alg"} for k in after.jwks()["keys"])


def test_rs256_refuses_key_confusion_and_unknown_kids(
    rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> None:
    key, stranger = rsa_keys
    service = asymmetric("RS256", _pem(key))
    kid = key_id(key.public_key())
    # The public key used as an HMAC secret (CVE-2015-9235).
    confused = forge({"alg": "HS256", "typ": "at+jwt", "kid": kid}, claims(), _public_pem(key))
    foreign = jwt.encode(
        claims(), stranger, algorithm="RS256", headers={"typ": "at+jwt", "kid": "someone-else"}
    )
    same_kid = jwt.encode(
        claims(), stranger, algorithm="RS256", headers={"typ": "at+jwt", "kid": kid}
    )
    no_kid = jwt.encode(claims(), key, algorithm="RS256", headers={"typ": "at+jwt"})
    for token in (confused, foreign, same_kid, no_kid):
        with pytest.raises(Unauthenticated):
            service.verify(token)


def test_es256() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    service = asymmetric("ES256", _pem(key))
    token = service.issue(user_id=9, role=Access.USER).token
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert who(service.verify(token)) == (9, Access.USER)
    [jwk] = service.jwks()["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("EC", "P-256", key_id(key.public_key()))


def test_hs256_publishes_no_keys() -> None:
    assert hs256().jwks() == {"keys": []}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "HS256", "secret": "short"}, "at least 32 bytes"),
        ({"algorithm": "HS256", "secret": None}, "at least 32 bytes"),
        ({"algorithm": "none"}, "unsupported algorithm"),
        ({"algorithm": "RS256", "secret": None}, "needs a private key"),
    ],
)
def test_bad_key_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hs256(**options)


def test_a_key_of_the_wrong_kind_is_refused(
    rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="does not fit RS256"):
        asymmetric("RS256", _pem(ec_key))
    with pytest.raises(ValueError, match="verification key does not fit"):
        asymmetric("RS256", _pem(rsa_keys[0]), _public_pem(ec_key))


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ([], None),
        (["Bearer abc.def.ghi"], "abc.def.ghi"),
        (["bearer abc.def.ghi"], "abc.def.ghi"),
        (["BEARER   abc.def.ghi  "], "abc.def.ghi"),
    ],
)
def test_bearer_headers(headers: list[str], token: str | None) -> None:
    assert bearer_token(headers) == token


@pytest.mark.parametrize(
    "headers",
    [
        ["abc.def.ghi"],
        ["Basic dXNlcjpwYXNz"],
        ["Bearer"],
        ["Bearer "],
        ["Bearer a.b.c d.e.f"],
        ["Bearer a.b.c", "Bearer d.e.f"],
        ["Token abc.def.ghi"],
        [""],
    ],
)
def test_garbage_headers_are_refused(headers: list[str]) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(headers)
