"""Error codes of the contract and the domain exceptions that carry them (no HTTP here)."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "validation_error"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    # Sent by the HTTP protocol itself (authsvc.serving), before the application runs.
    HEADERS_TOO_LARGE = "headers_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    USERNAME_TAKEN = "username_taken"
    REGISTRATION_DISABLED = "registration_disabled"
    WEAK_PASSWORD = "weak_password"
    INVALID_CREDENTIALS = "invalid_credentials"
    ACCOUNT_DISABLED = "account_disabled"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    REFRESH_TOKEN_EXPIRED = "refresh_token_expired"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    REFRESH_TOKEN_REVOKED = "refresh_token_revoked"
    INVALID_REFRESH_TOKEN = "invalid_refresh_token"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    NOT_AUTHENTICATED = "not_authenticated"
    TOKEN_EXPIRED = "token_expired"
    INVALID_TOKEN = "invalid_token"
    SESSION_NOT_FOUND = "session_not_found"
    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    SERVICE_UNAVAILABLE = "service_unavailable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"


class AuthError(Exception):
    """Base of every error the service reports to a client; ``code`` picks the response."""

    code: ErrorCode
    detail: str

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class UsernameTaken(AuthError):
    code = ErrorCode.USERNAME_TAKEN
    detail = "That username is already registered."


class RegistrationDisabled(AuthError):
    code = ErrorCode.REGISTRATION_DISABLED
    detail = "Registration is closed on this service."


class WeakPassword(AuthError):
    code = ErrorCode.WEAK_PASSWORD
    detail = "The password does not meet the password policy."


class InvalidCredentials(AuthError):
    code = ErrorCode.INVALID_CREDENTIALS
    detail = "Incorrect username or password."


class AccountDisabled(AuthError):
    code = ErrorCode.ACCOUNT_DISABLED
    detail = "This account is disabled."


class TooManyAttempts(AuthError):
    code = ErrorCode.TOO_MANY_ATTEMPTS
    detail = "Too many failed login attempts; try again later."

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(detail)


class RefreshTokenRefused(AuthError):
    """Any refusal of a presented refresh token (the token endpoint's ``invalid_grant``)."""


class RefreshTokenExpired(RefreshTokenRefused):
    code = ErrorCode.REFRESH_TOKEN_EXPIRED
    detail = "The refresh token has expired; log in again."


class RefreshTokenReused(RefreshTokenRefused):
    code = ErrorCode.REFRESH_TOKEN_REUSED
    detail = "This refresh token was already used; the session has been revoked."


class RefreshTokenRevoked(RefreshTokenRefused):
    code = ErrorCode.REFRESH_TOKEN_REVOKED
    detail = "The session of this refresh token has been revoked."


class InvalidRefreshToken(RefreshTokenRefused):
    code = ErrorCode.INVALID_REFRESH_TOKEN
    detail = "The refresh token is not valid."


class OriginNotAllowed(AuthError):
    code = ErrorCode.ORIGIN_NOT_ALLOWED
    detail = "Requests from this origin may not use the refresh cookie."


class NotAuthenticated(AuthError):
    code = ErrorCode.NOT_AUTHENTICATED
    detail = "Bearer access token required."


class TokenExpired(AuthError):
    code = ErrorCode.TOKEN_EXPIRED
    detail = "The access token expired."


class InvalidToken(AuthError):
    code = ErrorCode.INVALID_TOKEN
    detail = "The access token is not valid."


class SessionNotFound(AuthError):
    code = ErrorCode.SESSION_NOT_FOUND
    detail = "No such session."


class InvalidRequest(AuthError):
    code = ErrorCode.INVALID_REQUEST
    detail = "The request is missing a required parameter."


class UnsupportedMediaType(AuthError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    detail = "The body must be JSON, sent with Content-Type: application/json."


class InvalidClient(AuthError):
    code = ErrorCode.INVALID_CLIENT
    detail = "Client authentication failed."


class InvalidGrant(AuthError):
    """RFC 6749 §5.2: the refresh token of a refresh grant was refused."""

    code = ErrorCode.INVALID_GRANT
    detail = "The refresh token is not valid."


class UnsupportedGrantType(AuthError):
    code = ErrorCode.UNSUPPORTED_GRANT_TYPE
    detail = "The token endpoint supports grant_type `password` and `refresh_token` only."


class ServiceUnavailable(AuthError):
    code = ErrorCode.SERVICE_UNAVAILABLE
    detail = "The service is temporarily unavailable; try again shortly."
    # Seconds for the ``Retry-After`` header.
    retry_after = 5


class HashingBusy(ServiceUnavailable):
    """Too many requests already wait for a password-hashing slot: refused before hashing."""

    detail = "Too many password checks are waiting; try again in a moment."
    retry_after = 1
