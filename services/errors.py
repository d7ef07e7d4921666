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
