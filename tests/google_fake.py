"""A stand-in for Google's sign-in: our own RSA key, its certificate served the way
https://www.googleapis.com/oauth2/v1/certs serves Google's, and ID tokens signed with it.
google-auth verifies them for real; nothing in the verification is mocked."""

import datetime
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CLIENT_ID = "1234567890-test.apps.googleusercontent.com"


@dataclass(frozen=True)
class GoogleKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    certificate_pem: str


def make_google_key(kid: str) -> GoogleKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test.googleapis.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return GoogleKey(kid=kid, private_key=key, certificate_pem=pem)


def certs_body(*keys: GoogleKey) -> bytes:
    return json.dumps({key.kid: key.certificate_pem for key in keys}).encode()


def id_token(key: GoogleKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": CLIENT_ID,
        "azp": CLIENT_ID,
        "sub": "109876543210987654321",
        "email": "Newcomer@Example.com",
        "email_verified": True,
        "name": "New Comer",
        "iat": now,
        "exp": now + 3600,
    }
    claims = {k: v for k, v in {**claims, **overrides}.items() if v is not None}
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
