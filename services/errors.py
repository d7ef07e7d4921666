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


class UserNotFound(ServiceError):
    code = "USER_NOT_FOUND"

    def __init__(self, user_id: int | str) -> None:
        super().__init__(f"There is no user with id {user_id}.")
        self.user_id = user_id


class LastActiveAdmin(ServiceError):
    """The change would leave no active admin to run the service."""

    code = "LAST_ACTIVE_ADMIN"

    def __init__(self) -> None:
        super().__init__("This is the last active admin: make another user an admin first.")


class CannotTargetSelf(ServiceError):
    """An admin may not shut themselves out; another admin must."""

    code = "CANNOT_TARGET_SELF"

    def __init__(self, action: str) -> None:
        super().__init__(f"You cannot {action} your own account; ask another admin.")


class AccountDeactivated(ServiceError):
    code = "ACCOUNT_DEACTIVATED"

    def __init__(self, email: str) -> None:
        super().__init__(f"The account {email} is deactivated.")
        self.email = email


class InvalidRefreshToken(ServiceError):
    """Unknown, expired or revoked: the client must sign in again."""

    code = "INVALID_REFRESH_TOKEN"


class RefreshTokenReused(ServiceError):
    """A refresh token was presented after it had been exchanged: someone holds a copy."""

    code = "REFRESH_TOKEN_REUSED"

    def __init__(self) -> None:
        super().__init__(
            "This refresh token was already used; the session is revoked. Sign in again."
        )
