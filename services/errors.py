class ServiceError(Exception):
    """A business rule refused the request; its message is safe to show to the caller."""

    code = "SERVICE_ERROR"


class EmailTaken(ServiceError):
    code = "EMAIL_ALREADY_REGISTERED"

    def __init__(self, email: str) -> None:
        super().__init__(f"The email address {email} is already registered.")
        self.email = email


class ProvisioningError(ServiceError):
    """The external provisioning service did not accept the new user."""

    code = "PROVISIONING_FAILED"


class Unauthenticated(ServiceError):
    """No valid credentials: the caller must sign in (again)."""

    code = "UNAUTHENTICATED"


class Forbidden(ServiceError):
    """The caller is known but lacks the role for this."""

    code = "FORBIDDEN"


class InvalidGoogleToken(ServiceError):
    code = "INVALID_GOOGLE_TOKEN"


class EmailNotVerified(ServiceError):
    code = "EMAIL_NOT_VERIFIED"

    def __init__(self, email: str) -> None:
        super().__init__(f"Google has not verified the email address {email}.")
        self.email = email


class NotRegistered(ServiceError):
    code = "NOT_REGISTERED"

    def __init__(self, email: str) -> None:
        super().__init__(f"No account uses {email}, and sign-up is closed.")
        self.email = email


class DatabaseUnavailable(ServiceError):
    """The database did not answer; the request may be retried."""

    code = "SERVICE_UNAVAILABLE"


class RequestTimedOut(ServiceError):
    """The request's time (REQUEST_TIMEOUT_SECONDS) ran out before a step could start."""

    code = "REQUEST_TIMEOUT"


class OutcomeUnknown(ServiceError):
    """The connection died after COMMIT was sent: the change may or may not be saved."""

    code = "OUTCOME_UNKNOWN"


class GoogleUnavailable(ServiceError):
    """Google's signing certificates could not be fetched; nothing is wrong with the token."""

    code = "GOOGLE_UNAVAILABLE"
