"""Typed Python SDK of the ringmq MQTT broker.

- :class:`RingmqClient` / :class:`AsyncRingmqClient`: MQTT (paho-mqtt 2.x), decorator handlers,
  JSON payloads, automatic reconnection that resubscribes.
- :class:`RingmqApi`: the HTTP management API, REST publish and the SSE stream.
"""

from .aio import AsyncRingmqClient
from .api import Page, RingmqApi
from .client import RingmqClient, topic_matches
from .errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RingmqConnectionError,
    RingmqError,
    StreamRevokedError,
)
from .payload import JsonValue, Payload, PublishPayload, decode_payload, encode_payload
from .stream import EventStream, SseEvent
from .types import (
    AclRule,
    AclSet,
    AllowedTopics,
    ApiKey,
    BatchItemResult,
    BatchResult,
    CreatedOrg,
    ExchangedCredentials,
    KeyPermission,
    Org,
    OrgSettings,
    OrgUsage,
    PublishMessage,
    PublishResult,
    Session,
    StreamMessage,
    Subscription,
    User,
)

__version__ = "0.1.0"

__all__ = [
    "AclRule",
    "AclSet",
    "AllowedTopics",
    "ApiKey",
    "AsyncRingmqClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchItemResult",
    "BatchResult",
    "ConflictError",
    "CreatedOrg",
    "EventStream",
    "ExchangedCredentials",
    "JsonValue",
    "KeyPermission",
    "NotFoundError",
    "Org",
    "OrgSettings",
    "OrgUsage",
    "Page",
    "Payload",
    "PermissionDeniedError",
    "PublishMessage",
    "PublishPayload",
    "PublishResult",
    "RateLimitedError",
    "RingmqApi",
    "RingmqClient",
    "RingmqConnectionError",
    "RingmqError",
    "Session",
    "SseEvent",
    "StreamMessage",
    "StreamRevokedError",
    "Subscription",
    "User",
    "__version__",
    "decode_payload",
    "encode_payload",
    "topic_matches",
]
