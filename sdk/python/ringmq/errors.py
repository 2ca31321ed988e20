"""Exceptions raised by the ringmq SDK.

Every error is a :class:`RingmqError` carrying ``status`` (the HTTP status, or ``None`` for an MQTT
or transport error), ``error`` (the broker's machine-readable code, e.g. ``"not_found"``) and
``detail`` (the broker's human-readable sentence).
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = [
    "RingmqError",
    "RingmqConnectionError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "RateLimitedError",
    "StreamRevokedError",
    "error_from_response",
]


class RingmqError(Exception):
    """An error answered by the broker (HTTP API) or met talking to it.

    :ivar status: HTTP status code, or ``None`` when the error did not come from an HTTP answer.
    :ivar error: the broker's error code (``"not_found"``, ``"rate_limited"``, ...).
    :ivar detail: the broker's human-readable explanation.
    :ivar headers: the HTTP response headers, when there was a response.
    """

    def __init__(
        self,
        status: int | None,
        error: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})
        prefix = f"{status} " if status is not None else ""
        super().__init__(f"{prefix}{error}: {detail}")


class RingmqConnectionError(RingmqError, ConnectionError):
    """The MQTT connection could not be made or was refused by the broker.

    :ivar reason_code: the CONNACK reason code (MQTT 5 numbering), or ``None`` when the TCP/TLS
        connection itself failed or timed out.
    """

    def __init__(self, error: str, detail: str, reason_code: int | None = None) -> None:
        self.reason_code = reason_code
        super().__init__(None, error, detail)


class BadRequestError(RingmqError):
    """HTTP 400: malformed JSON, unknown field, invalid value or id."""


class AuthenticationError(RingmqError):
    """HTTP 401: missing or unknown API key (or a rejected token)."""


class PermissionDeniedError(RingmqError):
    """HTTP 403: the key may not do this, or an org cap is reached (``limit_exceeded``)."""


class NotFoundError(RingmqError):
    """HTTP 404: no such resource in the key's org."""


class ConflictError(RingmqError):
    """HTTP 409: already exists, still in use, or a replayed token."""


class RateLimitedError(RingmqError):
    """HTTP 429: over the org's rate (``rate_limited``), quota or stream cap.

    :ivar retry_after: seconds the broker asked to wait (``Retry-After``), or ``None``.
    """

    def __init__(
        self,
        status: int | None,
        error: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, error, detail, headers)
        self.retry_after = parse_retry_after(self.headers.get("retry-after"))


class StreamRevokedError(RingmqError):
    """An SSE stream ended with ``event: revoked``: the key or its rights went away."""


_BY_STATUS: dict[int, type[RingmqError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header value (delta-seconds form), or ``None``."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def error_from_response(status: int, body: Any, headers: Mapping[str, str]) -> RingmqError:
    """The :class:`RingmqError` subclass for an HTTP error answer.

    ``body`` is the decoded JSON body (normally ``{"error", "detail"}``) or the raw text.
    """
    error = f"http_{status}"
    detail = ""
    if isinstance(body, Mapping):
        error = str(body.get("error", error))
        detail = str(body.get("detail", ""))
    elif isinstance(body, str):
        detail = body.strip()
    lowered = {k.lower(): v for k, v in headers.items()}
    cls = _BY_STATUS.get(status, RingmqError)
    return cls(status, error, detail, lowered)
