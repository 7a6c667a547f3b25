"""Domain errors raised by services and rendered by each API dialect in its own format."""
from __future__ import annotations


class ThreadlineError(Exception):
    """Base error: an HTTP-ish status, a stable machine code and a user-safe message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.retry_after = retry_after


class BadRequest(ThreadlineError):
    status, code = 400, "bad_request"


class Unauthorized(ThreadlineError):
    status, code = 401, "unauthorized"


class Forbidden(ThreadlineError):
    status, code = 403, "forbidden"


class NotFound(ThreadlineError):
    status, code = 404, "not_found"


class Conflict(ThreadlineError):
    status, code = 409, "conflict"


class ValidationFailed(ThreadlineError):
    status, code = 422, "validation_failed"


class RateLimited(ThreadlineError):
    status, code = 429, "rate_limited"


class Unavailable(ThreadlineError):
    status, code = 503, "unavailable"
