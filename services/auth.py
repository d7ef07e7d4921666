"""Access tokens and the principal behind a request.

Our tokens are JWTs with the header `typ: at+jwt` (RFC 9068) and these claims: `sub` (the
user id as a string), `roles` (role names), `iat` (to the microsecond, so that a sign-out
everywhere refuses exactly the tokens issued before it), `exp`, `iss`, `aud`, `jti`, `sid`
(the session, as a string, for tokens a session issued), optionally `nbf`. Verification
follows RFC 8725: one pinned algorithm, required claims, issuer and audience checked, and no
key material ever taken from the token's header.
"""

import base64
import enum
import functools
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import FromClause, Select, and_, bindparam, select

from db import models
from services import idempotency
from services.errors import Unauthenticated
from services.provisioning import Provisioner
from services.unit_of_work import UnitOfWork
from services.users import (
    SESSIONS,
    USER_FIELDS,
    USERS,
    UserRecord,
    development_user,
    normalize_email,
)

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
SYMMETRIC_ALGORITHM = "HS256"
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
MIN_SECRET_BYTES = 32
# Far above any token we issue; a larger header is garbage or an attack on the parser.
MAX_TOKEN_LENGTH = 4096
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_BEARER = re.compile(r"bearer +(\S+)", re.IGNORECASE)
# Header parameters that point at keys: trusting them lets the token choose its own key.
_KEY_REFERENCE_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256"})
# Tokens verified by one service and remembered with their claims: a client sends the same
# token with every request, and checking its signature and claims again would cost each
# request more than any other step but its round trips. Bounded, so that many distinct
# tokens only push old ones out.
VERIFIED_TOKENS_KEPT = 1024

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Access(enum.IntEnum):
    """What a caller may do: ANONYMOUS (no token), USER or ADMIN, each including the ones
    below it. A user's stored role is db.models.Role (USER or ADMIN); `of` maps it here."""

    ANONYMOUS = 0
    USER = 1
    ADMIN = 2

    @classmethod
    def of(cls, role: models.Role) -> "Access":
        return cls[role.value]

    def implied(self) -> list["Access"]:
        return [role for role in Access if Access.USER <= role <= self]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: their user id and the role they act with."""

    user_id: int | None
    role: Access
    user: UserRecord | None = None
    """The caller's whole row as read while authenticating, when it was asked for."""
    session_id: int | None = None
    """The session the caller's token came from; None for tokens issued without one."""


ANONYMOUS = Principal(user_id=None, role=Access.ANONYMOUS)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    role: Access
    """The highest role the token names."""
    issued_at: float
    session_id: int | None = None


@dataclass(frozen=True, slots=True)
class _VerifiedToken:
    """What a token we issued says; whether it is valid now is for the clock to tell."""

    claims: Claims
    valid_from: float
    """The later of `iat` and `nbf`."""
    expires_at: float


def bearer_token(header_values: Sequence[str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is no header.

    Raises Unauthenticated for anything else: another scheme, no token, several tokens or
    several headers. The scheme is case-insensitive (RFC 7235).
    """
    if not header_values:
        return None
    if len(header_values) > 1:
        raise Unauthenticated("Send one Authorization header.")
    match = _BEARER.fullmatch(header_values[0].strip())
    if match is None:
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return match.group(1)


def key_id(public_key: PublicKey) -> str:
    """The RFC 7638 thumbprint of a public key: stable, and derived from the key alone."""
    jwk = _public_jwk(public_key)
    required = {name: jwk[name] for name in ("crv", "e", "kty", "n", "x", "y") if name in jwk}
    digest = hashlib.sha256(json.dumps(required, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _public_jwk(public_key: PublicKey) -> dict[str, Any]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public_key, as_dict=True)
    return ECAlgorithm.to_jwk(public_key, as_dict=True)


class TokenService:
    """Issues and verifies access tokens with one algorithm and its keys."""

    def __init__(
        self,
        *,
        algorithm: str,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        leeway_seconds: int,
        secret: str | None = None,
        private_key_pem: bytes | None = None,
        public_keys_pem: Sequence[bytes] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithm = algorithm
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds
        self._leeway = leeway_seconds
        self._clock = clock
        self._public_keys: dict[str, PublicKey] = {}
        self._verified = functools.lru_cache(maxsize=VERIFIED_TOKENS_KEPT)(
            self._verify_signature_and_claims
        )
        self._secret: str | None = None
        self._signing_key: str | PrivateKey
        self._signing_kid: str | None = None
        if algorithm == SYMMETRIC_ALGORITHM:
            if secret is None or len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"an {algorithm} secret must be at least {MIN_SECRET_BYTES} bytes")
            self._secret = self._signing_key = secret
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            self._signing_key, self._signing_kid = self._load_keys(private_key_pem, public_keys_pem)
        else:
            raise ValueError(f"unsupported algorithm {algorithm!r}")

    def _load_keys(
        self, private_key_pem: bytes | None, public_keys_pem: Sequence[bytes]
    ) -> tuple[PrivateKey, str]:
        if private_key_pem is None:
            raise ValueError(f"{self.algorithm} needs a private key")
        expected = rsa.RSAPrivateKey if self.algorithm == "RS256" else ec.EllipticCurvePrivateKey
        private_key = load_pem_private_key(private_key_pem, password=None)
        if not isinstance(private_key, expected):
            raise ValueError(f"the private key does not fit {self.algorithm}")
        signing_kid = key_id(private_key.public_key())
        self._public_keys[signing_kid] = private_key.public_key()
        for pem in public_keys_pem:
            public_key = load_pem_public_key(pem)
            if not isinstance(public_key, type(private_key.public_key())):
                raise ValueError(f"a verification key does not fit {self.algorithm}")
            self._public_keys[key_id(public_key)] = public_key
        return private_key, signing_kid

    def issue(
        self,
        *,
        user_id: int,
        role: Access,
        ttl_seconds: int | None = None,
        session_id: int | None = None,
    ) -> IssuedToken:
        now = self._clock()
        expires = int(now) + (ttl_seconds or self.ttl_seconds)
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "roles": [implied.name for implied in role.implied()],
            "iat": round(now, 6),
            "exp": expires,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": uuid.uuid4().hex,
        }
        if session_id is not None:
            claims["sid"] = str(session_id)
        headers: dict[str, Any] = {"typ": ACCESS_TOKEN_TYPE}
        if self._signing_kid is not None:
            headers["kid"] = self._signing_kid
        token = jwt.encode(claims, self._signing_key, algorithm=self.algorithm, headers=headers)
        return IssuedToken(token=token, expires_at=datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str) -> Claims:
        """The claims of a token we issued that is valid now; Unauthenticated otherwise."""
        if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_SHAPE.fullmatch(token):
            raise Unauthenticated("The access token is malformed.")
        verified = self._verified(token)
        # Checked on every use, cached or not, against this service's clock.
        now = self._clock()
        if verified.expires_at <= now - self._leeway:
            raise Unauthenticated("The access token has expired.")
        if verified.valid_from > now + self._leeway:
            raise Unauthenticated("The access token is not valid.")
        return verified.claims

    def _verify_signature_and_claims(self, token: str) -> _VerifiedToken:
        """Everything about a token that time does not change; remembered in _verified.
        Raises Unauthenticated (which lru_cache does not remember)."""
        header = _unverified_header(token)
        if header.get("typ") != ACCESS_TOKEN_TYPE or _KEY_REFERENCE_HEADERS & header.keys():
            raise Unauthenticated("The access token is not valid.")
        try:
            payload = jwt.decode(
                token,
                self._verification_key(header),
                algorithms=[self.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": ["exp", "iat", "sub", "iss", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated("The access token is not valid.") from error
        issued_at = _numeric_date(payload["iat"])
        not_before = _numeric_date(payload["nbf"]) if "nbf" in payload else issued_at
        return _VerifiedToken(
            claims=Claims(
                user_id=_subject(payload),
                role=_highest_role(payload),
                issued_at=issued_at,
                session_id=_session(payload),
            ),
            valid_from=max(issued_at, not_before),
            expires_at=_numeric_date(payload["exp"]),
        )

    def _verification_key(self, header: dict[str, Any]) -> str | PublicKey:
        kid = header.get("kid")
        if self._secret is not None and kid is None:
            return self._secret
        # A shared secret has no key ids; with key pairs, only the ids of our own keys count.
        if not isinstance(kid, str) or kid not in self._public_keys:
            raise Unauthenticated("The access token is not valid.")
        return self._public_keys[kid]

    def now(self) -> datetime:
        """This service's clock, which token lifetimes and cut-offs are measured by."""
        return datetime.fromtimestamp(self._clock(), UTC)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public verification keys as a JWK Set; empty for a shared secret."""
        keys = []
        for kid, public_key in self._public_keys.items():
            # RFC 7517 §4.3: "use" and "key_ops" should not appear together.
            jwk = {k: v for k, v in _public_jwk(public_key).items() if k != "key_ops"}
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": self.algorithm})
        return {"keys": keys}

    @property
    def issuer(self) -> str:
        """The `iss` of every token issued, and the only one accepted."""
        return self._issuer


def _numeric_date(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated("The access token is not valid.")
    return float(value)


def _subject(payload: dict[str, Any]) -> int:
    return _decimal_id(payload["sub"])


def _session(payload: dict[str, Any]) -> int | None:
    return _decimal_id(payload["sid"]) if "sid" in payload else None


def _decimal_id(value: object) -> int:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 18:
        raise Unauthenticated("The access token is not valid.")
    return int(value)


def _highest_role(payload: dict[str, Any]) -> Access:
    names = payload.get("roles")
    if not isinstance(names, list) or not names:
        raise Unauthenticated("The access token is not valid.")
    if not all(isinstance(name, str) and name in ("USER", "ADMIN") for name in names):
        raise Unauthenticated("The access token is not valid.")
    return max(Access[name] for name in names)


def _unverified_header(token: str) -> dict[str, Any]:
    """The header, to pick the key by: decoded alone, as PyJWT would decode the whole token
    (and then again to verify it). _TOKEN_SHAPE has already checked the alphabet."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError as error:  # bad base64 (binascii.Error), UTF-8 or JSON
        raise Unauthenticated("The access token is malformed.") from error
    if not isinstance(header, dict):
        raise Unauthenticated("The access token is malformed.")
    return header


# What authentication must know of a caller to admit them.
_STANDING = ("role", "deactivated_at", "tokens_valid_after")


@functools.cache
def _caller(*, with_row: bool, in_session: bool, keyed: bool) -> Select[Any]:
    """The caller's standing (or whole row), for a token of a session that session's, and
    with an Idempotency-Key the earlier request under it, in the same statement: one row, one
    round trip, whatever the token."""
    names = USER_FIELDS if with_row else ("id", *_STANDING)
    query = select(*(USERS.c[name] for name in names)).where(USERS.c.id == bindparam("user_id"))
    base: FromClause = USERS
    if in_session:
        base = USERS.outerjoin(
            SESSIONS,
            and_(SESSIONS.c.id == bindparam("session_id"), SESSIONS.c.user_id == USERS.c.id),
        )
        query = query.add_columns(
            SESSIONS.c.id.label("session_id"), SESSIONS.c.revoked_at.label("session_revoked")
        )
    if keyed:
        return idempotency.joined_to(query, base)
    return query.select_from(base)


def authenticate(
    uow: UnitOfWork, tokens: TokenService, token: str | None, *, with_row: bool = False
) -> Principal:
    """The principal for a bearer token: anonymous without one, else its user, looked up now.

    The role is the lower of the token's and the user's current one, so a token can narrow
    rights but never widen them. Deletion, deactivation, a sign-out everywhere (the user's
    `tokens_valid_after`) and the end of the token's session take effect on the next request.
    The lookup reads what decides that, or the caller's whole row `with_row`: a request that
    shows its caller's fields gets them from this one lookup. Raises Unauthenticated.
    """
    return _authenticate(uow, tokens, token, with_row=with_row, key=None)[0]


def authenticate_keyed(
    uow: UnitOfWork, tokens: TokenService, token: str | None, *, with_row: bool, key: str
) -> tuple[Principal, int | None]:
    """authenticate(), and the id of the signed-in caller's earlier request under the
    Idempotency-Key `key`, read by the same statement (None without one, and for a caller
    without a token, whose key its address owns: idempotency.lookup() reads it)."""
    return _authenticate(uow, tokens, token, with_row=with_row, key=key)


def _authenticate(
    uow: UnitOfWork, tokens: TokenService, token: str | None, *, with_row: bool, key: str | None
) -> tuple[Principal, int | None]:
    if token is None:
        return ANONYMOUS, None
    claims = tokens.verify(token)
    query = _caller(
        with_row=with_row, in_session=claims.session_id is not None, keyed=key is not None
    )
    parameters: dict[str, Any] = {"user_id": claims.user_id, "session_id": claims.session_id}
    if key is not None:
        parameters.update(owner=idempotency.owner(claims.user_id, ""), claimed=key)
    with uow:
        user: Any = uow.connection().execute(query, parameters).first()
    if user is None:
        raise Unauthenticated("The access token's user no longer exists.")
    if user.deactivated_at is not None:
        raise Unauthenticated("The account is deactivated.")
    cut_off = user.tokens_valid_after
    if cut_off is not None and claims.issued_at < cut_off.timestamp():
        raise Unauthenticated("The access token was revoked; sign in again.")
    if claims.session_id is not None and (user.session_id is None or user.session_revoked):
        raise Unauthenticated("The session has ended; sign in again.")
    role = min(claims.role, Access.of(user.role))
    principal = Principal(
        user_id=claims.user_id,
        role=role,
        user=user if with_row else None,
        session_id=claims.session_id,
    )
    return principal, None if key is None else idempotency.earlier_of(user)


def issue_token_for(
    uow: UnitOfWork, tokens: TokenService, *, email: str, ttl_seconds: int | None = None
) -> IssuedToken | None:
    """A token for the user with this email, with their current role; None if there is none."""
    with uow:
        user = uow.session.scalar(
            select(models.User).where(models.User.email == normalize_email(email))
        )
    if user is None:
        return None
    return tokens.issue(user_id=user.id, role=Access.of(user.role), ttl_seconds=ttl_seconds)


def issue_development_token(
    uow: UnitOfWork,
    provisioner: Provisioner,
    tokens: TokenService,
    *,
    role: models.Role,
    ttl_seconds: int,
) -> tuple[IssuedToken, str]:
    """A short-lived token for a user who has exactly this role (created if there is none),
    and that user's email: GraphiQL's role switcher. Raises ProvisioningError."""
    user = development_user(uow, provisioner, role=role)
    return tokens.issue(user_id=user.id, role=Access.of(role), ttl_seconds=ttl_seconds), user.email
