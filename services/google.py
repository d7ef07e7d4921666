"""Sign-in with a Google ID token, verified locally with google-auth."""

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import google.auth.exceptions
import jwt
import urllib3
from google.auth import transport
from google.auth.transport.urllib3 import Request as Urllib3Request
from google.oauth2 import id_token as google_id_token
from sqlalchemy import select

from db import models
from services.auth import TokenService
from services.errors import (
    AccountDeactivated,
    EmailNotVerified,
    EmailTaken,
    GoogleUnavailable,
    InvalidGoogleToken,
    NotRegistered,
)
from services.provisioning import Provisioner
from services.sessions import SessionTokens, start_session
from services.telemetry import Telemetry
from services.text import storable
from services.unit_of_work import UnitOfWork
from services.users import create_user, normalize_email

logger = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
_MAX_AGE = re.compile(r"max-age=(\d+)")
# Google rotates its keys over days and says so in Cache-Control; without that header a few
# minutes is a safe guess.
DEFAULT_CERTS_MAX_AGE_SECONDS = 300
CERTS_FETCH_TIMEOUT_SECONDS = 5


@dataclass(frozen=True, slots=True)
class _CachedResponse(transport.Response):
    _status: int
    _headers: Mapping[str, str]
    _data: bytes

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class CachingRequest(transport.Request):
    """A google-auth transport that keeps successful GETs for as long as Cache-Control says.

    google-auth fetches the certificates on every verification; this keeps one copy per
    process and refetches only when it has expired.
    """

    @classmethod
    def over_urllib3(cls, telemetry: Telemetry) -> "CachingRequest":
        return cls(Urllib3Request(urllib3.PoolManager()), telemetry=telemetry)

    def __init__(
        self,
        inner: transport.Request,
        clock: Callable[[], float] = time.monotonic,
        *,
        telemetry: Telemetry | None = None,
    ):
        self._inner = inner
        self._clock = clock
        self._telemetry = telemetry or Telemetry()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, _CachedResponse]] = {}

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> transport.Response:
        if method != "GET":
            response: transport.Response = self._inner(
                url, method=method, body=body, headers=headers, timeout=timeout
            )
            return response
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            sent = dict(headers or {})
            with self._telemetry.outgoing("GET", url, sent) as call:
                try:
                    fetched = self._inner(
                        url,
                        method="GET",
                        headers=sent,
                        timeout=timeout or CERTS_FETCH_TIMEOUT_SECONDS,
                    )
                except Exception as error:
                    call.error = type(error).__name__
                    raise
                call.status = fetched.status
            response = _CachedResponse(fetched.status, dict(fetched.headers), fetched.data)
            if response.status == 200:
                self._cache[url] = (self._clock() + _max_age(response.headers), response)
            return response


def _max_age(headers: Mapping[str, str]) -> float:
    cache_control = next((v for k, v in headers.items() if k.lower() == "cache-control"), "")
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else DEFAULT_CERTS_MAX_AGE_SECONDS


@dataclass(frozen=True, slots=True)
class GoogleIdentity:
    email: str
    name: str


class IdTokenVerifier(Protocol):
    def verify(self, token: str) -> GoogleIdentity: ...


class GoogleIdTokenVerifier:
    def __init__(
        self,
        *,
        client_ids: Sequence[str],
        request: transport.Request,
        certs_url: str = GOOGLE_CERTS_URL,
        hosted_domain: str | None = None,
        leeway_seconds: int = 30,
    ) -> None:
        self._client_ids = list(client_ids)
        self._request = request
        self._certs_url = certs_url
        self._hosted_domain = hosted_domain
        self._leeway = leeway_seconds

    def verify(self, token: str) -> GoogleIdentity:
        """The identity in a Google ID token meant for us.

        Checks the signature against Google's certificates, `aud` (one of our client ids),
        `iss`, `exp`, `email_verified` and, when configured, the hosted domain `hd`. Raises
        InvalidGoogleToken, EmailNotVerified or GoogleUnavailable.
        """
        if not self._client_ids:
            raise InvalidGoogleToken("Google sign-in is not configured on this server.")
        try:
            claims = google_id_token.verify_token(
                token,
                self._request,
                audience=self._client_ids,
                certs_url=self._certs_url,
                clock_skew_in_seconds=self._leeway,
            )
        except google.auth.exceptions.TransportError as error:
            logger.warning("could not fetch Google's certificates: %s", error)
            raise GoogleUnavailable("Google sign-in is unavailable; try again later.") from error
        except (google.auth.exceptions.GoogleAuthError, jwt.PyJWTError, ValueError) as error:
            raise InvalidGoogleToken("The Google ID token is not valid.") from error
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise InvalidGoogleToken("The Google ID token is not valid.")
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise InvalidGoogleToken("The Google ID token carries no email address.")
        if claims.get("email_verified") is not True:
            raise EmailNotVerified(email)
        if self._hosted_domain is not None and claims.get("hd") != self._hosted_domain:
            raise InvalidGoogleToken(f"Only {self._hosted_domain} accounts may sign in.")
        name = claims.get("name")
        return GoogleIdentity(email=normalize_email(email), name=_display_name(name, email))


def _display_name(name: object, email: str) -> str:
    text = storable(name).strip() if isinstance(name, str) else ""
    return (text or email.split("@", 1)[0])[: models.NAME_MAX_LENGTH]


def sign_in_with_google(
    uow: UnitOfWork,
    provisioner: Provisioner,
    verifier: IdTokenVerifier,
    tokens: TokenService,
    *,
    id_token: str,
    signup_enabled: bool,
    user_agent: str | None,
    session_ttl_seconds: int,
) -> SessionTokens:
    """Exchange a Google ID token for a new session, registering the person if new.

    Registration is `create_user`, with its provisioning and its transaction. Raises
    InvalidGoogleToken, EmailNotVerified, NotRegistered, AccountDeactivated,
    GoogleUnavailable and ProvisioningError.
    """
    identity = verifier.verify(id_token)
    user = _find(uow, identity.email)
    if user is None:
        if not signup_enabled:
            raise NotRegistered(identity.email)
        try:
            user = create_user(uow, provisioner, name=identity.name, email=identity.email)
        except EmailTaken:
            # A concurrent first sign-in of the same person registered them a moment ago.
            user = _find(uow, identity.email)
            if user is None:
                raise
    if user.deactivated_at is not None:
        raise AccountDeactivated(user.email)
    return start_session(
        uow, tokens, user=user, user_agent=user_agent, ttl_seconds=session_ttl_seconds
    )


def _find(uow: UnitOfWork, email: str) -> models.User | None:
    with uow:
        return uow.session.scalar(select(models.User).where(models.User.email == email))
