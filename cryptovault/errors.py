"""Domain errors. Domain code raises these; one place (extensions/masking.py) maps them to
GraphQL errors with a stable `extensions.code`."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class BadUserInput(DomainError):
    code = "BAD_USER_INPUT"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class NotFound(DomainError):
    code = "NOT_FOUND"


class Conflict(DomainError):
    code = "CONFLICT"


class InsufficientFunds(DomainError):
    code = "INSUFFICIENT_FUNDS"


class RateLimited(DomainError):
    code = "RATE_LIMITED"


class QueryTooComplex(DomainError):
    code = "QUERY_TOO_COMPLEX"


class AccountLocked(DomainError):
    code = "ACCOUNT_LOCKED"


class TwoFactorRequired(DomainError):
    code = "TWO_FACTOR_REQUIRED"


class PersistedQueryNotFound(DomainError):
    code = "PERSISTED_QUERY_NOT_FOUND"
