"""Typed objects returned by the management API, REST publish and streams.

Every object is a dataclass built with ``from_json``; fields a newer broker adds are not an error:
they are kept in ``extra`` (a ``dict``), so an older SDK keeps working.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from .payload import Payload, PublishPayload, decode_payload

__all__ = [
    "User",
    "AclRule",
    "AclSet",
    "KeyPermission",
    "ApiKey",
    "Subscription",
    "Session",
    "OrgSettings",
    "OrgUsage",
    "Org",
    "CreatedOrg",
    "AllowedTopics",
    "ExchangedCredentials",
    "PublishResult",
    "BatchItemResult",
    "BatchResult",
    "PublishMessage",
    "StreamMessage",
]


# -- typed field readers (tolerant of a missing field, strict about nothing else) ----------------
def _str(d: Mapping[str, Any], k: str, default: str = "") -> str:
    v = d.get(k, default)
    return default if v is None else str(v)


def _opt_str(d: Mapping[str, Any], k: str) -> str | None:
    v = d.get(k)
    return None if v is None else str(v)


def _int(d: Mapping[str, Any], k: str, default: int = 0) -> int:
    v = d.get(k, default)
    return default if v is None else int(v)


def _opt_int(d: Mapping[str, Any], k: str) -> int | None:
    v = d.get(k)
    return None if v is None else int(v)


def _bool(d: Mapping[str, Any], k: str, default: bool = False) -> bool:
    v = d.get(k, default)
    return default if v is None else bool(v)


def _strs(d: Mapping[str, Any], k: str) -> list[str]:
    v = d.get(k) or []
    return [str(x) for x in v]


def _maps(d: Mapping[str, Any], k: str) -> list[Mapping[str, Any]]:
    v = d.get(k) or []
    return [x for x in v if isinstance(x, Mapping)]


def _extra(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k not in names}


# -- management objects ---------------------------------------------------------------------------
@dataclass
class User:
    """An MQTT user (never its password)."""

    username: str
    namespace: str | None
    enabled: bool
    acl_sets: list[str]
    created_at: int
    updated_at: int
    expires_at: int | None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> User:
        """Build from the broker's JSON object."""
        return cls(
            username=_str(d, "username"),
            namespace=_opt_str(d, "namespace"),
            enabled=_bool(d, "enabled", True),
            acl_sets=_strs(d, "acl_sets"),
            created_at=_int(d, "created_at"),
            updated_at=_int(d, "updated_at"),
            expires_at=_opt_int(d, "expires_at"),
            extra=_extra(cls, d),
        )


@dataclass
class AclRule:
    """An ACL rule: ``permission`` (allow/deny) of ``action`` (publish/subscribe/all) on ``topic``."""

    id: str
    set: str
    permission: str
    action: str
    topic: str
    created_at: int
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AclRule:
        """Build from the broker's JSON object."""
        return cls(
            id=_str(d, "id"),
            set=_str(d, "set", "default"),
            permission=_str(d, "permission"),
            action=_str(d, "action"),
            topic=_str(d, "topic"),
            created_at=_int(d, "created_at"),
            extra=_extra(cls, d),
        )


@dataclass
class AclSet:
    """A named set of ACL rules; ``rules`` is filled by ``get`` only (``None`` in lists)."""

    name: str
    description: str
    rule_count: int
    created_at: int
    rules: list[AclRule] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AclSet:
        """Build from the broker's JSON object."""
        rules = d.get("rules")
        return cls(
            name=_str(d, "name"),
            description=_str(d, "description"),
            rule_count=_int(d, "rule_count"),
            created_at=_int(d, "created_at"),
            rules=None if rules is None else [AclRule.from_json(r) for r in _maps(d, "rules")],
            extra=_extra(cls, d),
        )


@dataclass
class KeyPermission:
    """One permission of a restricted key: ``action`` (publish/subscribe/all) on ``topic``."""

    action: str
    topic: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> KeyPermission:
        """Build from the broker's JSON object."""
        return cls(action=_str(d, "action"), topic=_str(d, "topic"))

    def to_json(self) -> dict[str, Any]:
        """The JSON object the broker takes."""
        return {"action": self.action, "topic": self.topic}


@dataclass
class ApiKey:
    """An API key. ``key`` (the secret) is set only in the answer that created it."""

    id: str
    name: str
    kind: str
    prefix: str
    permissions: list[KeyPermission]
    acl_sets: list[str]
    created_at: int
    last_used_at: int | None
    revoked_at: int | None
    key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ApiKey:
        """Build from the broker's JSON object."""
        return cls(
            id=_str(d, "id"),
            name=_str(d, "name"),
            kind=_str(d, "kind"),
            prefix=_str(d, "prefix"),
            permissions=[KeyPermission.from_json(p) for p in _maps(d, "permissions")],
            acl_sets=_strs(d, "acl_sets"),
            created_at=_int(d, "created_at"),
            last_used_at=_opt_int(d, "last_used_at"),
            revoked_at=_opt_int(d, "revoked_at"),
            key=_opt_str(d, "key"),
            extra=_extra(cls, d),
        )


@dataclass
class Subscription:
    """One subscription of a session."""

    filter: str
    qos: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Subscription:
        """Build from the broker's JSON object."""
        return cls(filter=_str(d, "filter"), qos=_int(d, "qos"))


@dataclass
class Session:
    """An MQTT session (connected or kept for a client that went away)."""

    client_id: str
    username: str | None
    connected: bool
    shard: int
    address: str | None
    connected_at: int | None
    subscriptions: list[Subscription]
    queued: int
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Session:
        """Build from the broker's JSON object."""
        return cls(
            client_id=_str(d, "client_id"),
            username=_opt_str(d, "username"),
            connected=_bool(d, "connected"),
            shard=_int(d, "shard"),
            address=_opt_str(d, "address"),
            connected_at=_opt_int(d, "connected_at"),
            subscriptions=[Subscription.from_json(s) for s in _maps(d, "subscriptions")],
            queued=_int(d, "queued"),
            extra=_extra(cls, d),
        )


@dataclass
class OrgSettings:
    """An org's limits (``None`` for a setting the broker did not send)."""

    rate_limit_per_sec: int | None = None
    rate_burst: int | None = None
    monthly_quota: int | None = None
    connections_max: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OrgSettings:
        """Build from the broker's JSON object."""
        return cls(
            rate_limit_per_sec=_opt_int(d, "rate_limit_per_sec"),
            rate_burst=_opt_int(d, "rate_burst"),
            monthly_quota=_opt_int(d, "monthly_quota"),
            connections_max=_opt_int(d, "connections_max"),
            extra=_extra(cls, d),
        )

    def to_json(self) -> dict[str, Any]:
        """The settings that are set, as the broker takes them."""
        out = {
            k: v
            for k, v in (
                ("rate_limit_per_sec", self.rate_limit_per_sec),
                ("rate_burst", self.rate_burst),
                ("monthly_quota", self.monthly_quota),
                ("connections_max", self.connections_max),
            )
            if v is not None
        }
        out.update(self.extra)
        return out


@dataclass
class OrgUsage:
    """An org's usage counters for ``month`` (``YYYY-MM``)."""

    connections: int
    messages_in: int
    messages_out: int
    rest_publishes: int
    month: str
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OrgUsage:
        """Build from the broker's JSON object."""
        return cls(
            connections=_int(d, "connections"),
            messages_in=_int(d, "messages_in"),
            messages_out=_int(d, "messages_out"),
            rest_publishes=_int(d, "rest_publishes"),
            month=_str(d, "month"),
            extra=_extra(cls, d),
        )


@dataclass
class Org:
    """An organisation. ``usage`` is sent by ``GET /v1/org`` only."""

    id: str
    name: str
    created_at: int
    settings: OrgSettings
    usage: OrgUsage | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Org:
        """Build from the broker's JSON object."""
        settings = d.get("settings")
        usage = d.get("usage")
        return cls(
            id=_str(d, "id"),
            name=_str(d, "name"),
            created_at=_int(d, "created_at"),
            settings=OrgSettings.from_json(settings if isinstance(settings, Mapping) else {}),
            usage=OrgUsage.from_json(usage) if isinstance(usage, Mapping) else None,
            extra=_extra(cls, d),
        )


@dataclass
class CreatedOrg:
    """The answer to creating an org: the org and its first secret key (with ``key.key``)."""

    org: Org
    key: ApiKey

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CreatedOrg:
        """Build from the broker's JSON object."""
        org = d.get("org")
        key = d.get("key")
        return cls(
            org=Org.from_json(org if isinstance(org, Mapping) else {}),
            key=ApiKey.from_json(key if isinstance(key, Mapping) else {}),
        )


@dataclass
class AllowedTopics:
    """The topic patterns exchanged credentials may publish and subscribe to."""

    publish: list[str]
    subscribe: list[str]


@dataclass
class ExchangedCredentials:
    """MQTT credentials from a token exchange (``username`` is ``tx_…@org``)."""

    username: str
    password: str
    expires_at: int
    allowed: AllowedTopics
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExchangedCredentials:
        """Build from the broker's JSON object."""
        allowed = d.get("allowed")
        a: Mapping[str, Any] = allowed if isinstance(allowed, Mapping) else {}
        return cls(
            username=_str(d, "username"),
            password=_str(d, "password"),
            expires_at=_int(d, "expires_at"),
            allowed=AllowedTopics(publish=_strs(a, "publish"), subscribe=_strs(a, "subscribe")),
            extra=_extra(cls, d),
        )


# -- publishing -----------------------------------------------------------------------------------
@dataclass
class PublishResult:
    """The answer to a REST publish.

    ``status`` is ``"accepted"`` (QoS 0) or ``"queued"`` (QoS 1, with ``matched`` subscriptions);
    ``replayed`` is true when the broker answered from an earlier request with the same
    idempotency key (nothing was published again).
    """

    status: str
    topic: str
    qos: int
    matched: int | None = None
    replayed: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], replayed: bool = False) -> PublishResult:
        """Build from the broker's JSON object."""
        return cls(
            status=_str(d, "status"),
            topic=_str(d, "topic"),
            qos=_int(d, "qos"),
            matched=_opt_int(d, "matched"),
            replayed=replayed,
            extra=_extra(cls, d),
        )


@dataclass
class BatchItemResult:
    """The result of one message of a batch: an HTTP-like ``status`` (202, 200, 400, 403, ...),
    with ``error``/``detail`` when it failed."""

    status: int
    topic: str | None = None
    qos: int | None = None
    matched: int | None = None
    error: str | None = None
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when this message was published (a 2xx status)."""
        return 200 <= self.status < 300

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BatchItemResult:
        """Build from the broker's JSON object."""
        return cls(
            status=_int(d, "status"),
            topic=_opt_str(d, "topic"),
            qos=_opt_int(d, "qos"),
            matched=_opt_int(d, "matched"),
            error=_opt_str(d, "error"),
            detail=_opt_str(d, "detail"),
            extra=_extra(cls, d),
        )


@dataclass
class BatchResult:
    """The answer to a batch publish: one result per message, in order."""

    results: list[BatchItemResult]
    replayed: bool = False


@dataclass
class PublishMessage:
    """One message of :meth:`RingmqApi.publish_batch` (a plain ``dict`` in the broker's publish-body
    format is accepted too). ``payload`` is encoded like :func:`ringmq.payload.encode_payload`:
    ``bytes`` as base64, ``str`` as text, anything else as JSON."""

    topic: str
    payload: PublishPayload = ""
    qos: int = 0
    retain: bool = False
    content_type: str | None = None
    message_expiry: int | None = None
    user_properties: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """The broker's publish body for this message."""
        body: dict[str, Any] = {"topic": self.topic, "qos": self.qos, "retain": self.retain}
        p = self.payload
        if isinstance(p, (bytes, bytearray, memoryview)):
            body["payload_base64"] = base64.b64encode(bytes(p)).decode("ascii")
        elif isinstance(p, str):
            body["payload"] = p
        elif isinstance(p, Mapping):
            body["payload"] = dict(p)
        elif isinstance(p, Sequence):
            body["payload"] = list(p)
        else:
            body["payload"] = p
        if self.content_type is not None:
            body["content_type"] = self.content_type
        if self.message_expiry is not None:
            body["message_expiry"] = self.message_expiry
        if self.user_properties is not None:
            up = self.user_properties
            body["user_properties"] = (
                dict(up) if isinstance(up, Mapping) else [[k, v] for k, v in up]
            )
        if self.response_topic is not None:
            body["response_topic"] = self.response_topic
        if self.correlation_data is not None:
            body["correlation_data_base64"] = base64.b64encode(self.correlation_data).decode("ascii")
        return body


# -- streams --------------------------------------------------------------------------------------
@dataclass
class StreamMessage:
    """A message received on an SSE stream.

    ``payload`` is decoded like an MQTT handler's (JSON value, else text, else bytes); ``raw`` is the
    message's bytes. ``id`` is the SSE event id (the resume point).
    """

    id: str | None
    topic: str
    payload: Payload
    raw: bytes
    retained: bool
    qos: int
    ts: int
    ts_ms: int
    org_id: str
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], event_id: str | None = None) -> StreamMessage:
        """Build from a stream frame's JSON."""
        text = _str(d, "payload")
        if _bool(d, "is_base64"):
            raw = base64.b64decode(text)
        else:
            raw = text.encode("utf-8")
        extra = _extra(cls, d)
        extra.pop("is_base64", None)
        return cls(
            id=event_id,
            topic=_str(d, "topic"),
            payload=decode_payload(raw),
            raw=raw,
            retained=_bool(d, "retained"),
            qos=_int(d, "qos"),
            ts=_int(d, "ts"),
            ts_ms=_int(d, "ts_ms"),
            org_id=_str(d, "org_id"),
            extra=extra,
        )
