import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from db.deadline import bounded
from services.errors import ProvisioningError
from services.metrics import child
from services.telemetry import OutgoingCall, Telemetry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewUser:
    id: int
    name: str
    email: str
    role: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RemovedUser:
    id: int
    email: str
    deleted_at: datetime


class Provisioner(Protocol):
    """The external system that must accept a user before the user exists here, and agree
    to their removal before they are gone.

    Called inside the creating or deleting transaction, before its commit: raising
    `ProvisioningError` rolls the change back.
    """

    def provision(self, user: NewUser) -> None: ...

    def deprovision(self, user: RemovedUser) -> None: ...


class NoopProvisioner:
    def provision(self, user: NewUser) -> None:
        return None

    def deprovision(self, user: RemovedUser) -> None:
        return None


class WebhookProvisioner:
    """POSTs each event as JSON (`event`: user.created or user.deleted); any answer but 2xx,
    or no answer in time, is a refusal."""

    def __init__(
        self, url: str, *, timeout_seconds: float, telemetry: Telemetry | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the provisioning webhook URL must be http:// or https://")
        self._url = url
        self._timeout_seconds = timeout_seconds
        self._telemetry = telemetry or Telemetry()

    def provision(self, user: NewUser) -> None:
        self._post(
            user.id,
            {
                "event": "user.created",
                "id": str(user.id),
                "name": user.name,
                "email": user.email,
                "role": user.role,
                "createdAt": user.created_at.isoformat(),
            },
        )

    def deprovision(self, user: RemovedUser) -> None:
        self._post(
            user.id,
            {
                "event": "user.deleted",
                "id": str(user.id),
                "email": user.email,
                "deletedAt": user.deleted_at.isoformat(),
            },
        )

    def _post(self, user_id: int, event: dict[str, str]) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        with self._telemetry.outgoing("POST", self._url, headers) as call:
            try:
                self._send(user_id, json.dumps(event).encode(), headers, call)
            finally:
                if (measures := self._telemetry.metrics) is not None:
                    outcome = call.error or "ok"
                    child(measures.webhook_calls, outcome).inc()
                    child(measures.webhook_duration, outcome).observe(call.seconds())

    def _send(self, user_id: int, body: bytes, headers: dict[str, str], call: OutgoingCall) -> None:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self._url, data=body, method="POST", headers=headers
        )
        timeout = bounded(self._timeout_seconds)  # no longer than the request has left
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                call.status = response.status
                response.read()
        except urllib.error.HTTPError as error:
            call.status, call.error = error.code, "refused"
            logger.warning("provisioning webhook refused user %s: HTTP %s", user_id, error.code)
            raise ProvisioningError(
                f"The provisioning service refused the user (HTTP {error.code})."
            ) from error
        except TimeoutError as error:
            call.error = "timeout"
            logger.warning("provisioning webhook timed out for user %s", user_id)
            raise ProvisioningError("The provisioning service did not answer in time.") from error
        except (urllib.error.URLError, OSError) as error:
            call.error = "unreachable"
            logger.warning("provisioning webhook unreachable for user %s: %s", user_id, error)
            raise ProvisioningError("The provisioning service could not be reached.") from error
