"""One root exception with a few subclasses that carry a stable code.

Client-facing errors are values with documented codes (``error`` in JSON bodies,
``error.code`` in Socket.IO acks); these classes are how the code raises them.
"""

from __future__ import annotations


class RelayError(Exception):
    """Root of every error the relay raises on purpose."""

    code = "relay_error"
    status = 500

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ConfigError(RelayError):
    """A setting is missing or invalid; start-up stops with this one line."""

    code = "config"


class AuthError(RelayError):
    """A token, secret or key was missing or wrong."""

    code = "unauthorized"
    status = 401


class BadEventError(RelayError):
    """A webhook or socket payload that is not a known event shape."""

    code = "bad_event"
    status = 400


class StoreUnavailable(RelayError):
    """The state store (Redis) could not be reached; the caller should retry."""

    code = "store_unavailable"
    status = 503


class RateLimited(RelayError):
    """Asked too often; ``retry_after`` seconds until it may be asked again."""

    code = "rate_limited"
    status = 429

    def __init__(self, detail: str, retry_after: float):
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after + 0.999))


class UpstreamError(RelayError):
    """The gateway answered with an error, or could not be reached."""

    code = "upstream_error"
    status = 502
