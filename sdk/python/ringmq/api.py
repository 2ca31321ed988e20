"""The HTTP client of ringmq's management API, REST publish and SSE stream (see docs/api.md).

Lists: ``resource.list(...)`` returns a lazy iterator over **all** items, fetching the next page
(following ``next_cursor``) only when the previous one is used up; ``resource.page(cursor=,
limit=)`` returns one :class:`Page` for manual paging.
"""

from __future__ import annotations

import builtins
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar
from urllib.parse import quote

import httpx

from .errors import RateLimitedError, RingmqError, error_from_response
from .payload import PublishPayload
from .stream import EventStream, SseEvent
from .urls import with_query
from .types import (
    AclRule,
    AclSet,
    ApiKey,
    BatchItemResult,
    BatchResult,
    CreatedOrg,
    ExchangedCredentials,
    KeyPermission,
    Org,
    OrgSettings,
    PublishMessage,
    PublishResult,
    Session,
    User,
)

__all__ = ["RingmqApi", "Page"]

T = TypeVar("T")
_JSON = dict[str, Any]
Settings = OrgSettings | Mapping[str, int]

#: Sentinel for "not given" where ``None`` is a meaningful value.
_UNSET: Any = object()


def _seg(value: str) -> str:
    """Percent-encode one path segment (``/`` becomes ``%2F``)."""
    return quote(value, safe="")


def _settings_json(settings: Settings) -> dict[str, Any]:
    if isinstance(settings, OrgSettings):
        return settings.to_json()
    return dict(settings)


@dataclass


class Page(Generic[T]):
    """One page of a list: its ``items`` and the ``next_cursor`` (``None`` on the last page)."""

    items: builtins.list[T]
    next_cursor: str | None


class _Resource:
    def __init__(self, api: RingmqApi) -> None:
        self._api = api

    def _page(
        self,
        path: str,
        build: Callable[[Mapping[str, Any]], T],
        params: Mapping[str, str | None],
        cursor: str | None,
        limit: int | None,
    ) -> Page[T]:
        q = {k: v for k, v in params.items() if v is not None}
        if cursor is not None:
            q["cursor"] = cursor
        if limit is not None:
            q["limit"] = str(limit)
        body = self._api.request("GET", path, params=q)
        items = body.get("items", []) if isinstance(body, dict) else []
        nxt = body.get("next_cursor") if isinstance(body, dict) else None
        return Page([build(x) for x in items if isinstance(x, Mapping)], None if nxt is None else str(nxt))

    def _iterate(
        self,
        path: str,
        build: Callable[[Mapping[str, Any]], T],
        params: Mapping[str, str | None],
        limit: int | None,
    ) -> Iterator[T]:
        cursor: str | None = None
        while True:
            page = self._page(path, build, params, cursor, limit)
            yield from page.items
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor


class Users(_Resource):
    """MQTT users: ``/v1/users``."""

    def list(self, *, limit: int | None = None) -> Iterator[User]:
        """All users, lazily (``limit`` is the page size)."""
        return self._iterate("/v1/users", User.from_json, {}, limit)

    def page(self, cursor: str | None = None, limit: int | None = None) -> Page[User]:
        """One page of users."""
        return self._page("/v1/users", User.from_json, {}, cursor, limit)

    def get(self, username: str) -> User:
        """One user."""
        return User.from_json(self._api.request("GET", f"/v1/users/{_seg(username)}"))

    def create(
        self,
        username: str,
        password: str,
        *,
        namespace: str | None = None,
        enabled: bool = True,
        acl_sets: Sequence[str] = (),
    ) -> User:
        """Create a user (409 ``ConflictError`` if it exists)."""
        body: _JSON = {"username": username, "password": password, "enabled": enabled, "acl_sets": list(acl_sets)}
        if namespace is not None:
            body["namespace"] = namespace
        return User.from_json(self._api.request("POST", "/v1/users", json=body))

    def update(
        self,
        username: str,
        *,
        password: str | None = None,
        namespace: str | None = _UNSET,
        enabled: bool | None = None,
        acl_sets: Sequence[str] | None = None,
    ) -> User:
        """Change a user's password, namespace (``None`` clears it), enabled flag or ACL sets."""
        body: _JSON = {}
        if password is not None:
            body["password"] = password
        if namespace is not _UNSET:
            body["namespace"] = namespace
        if enabled is not None:
            body["enabled"] = enabled
        if acl_sets is not None:
            body["acl_sets"] = list(acl_sets)
        return User.from_json(self._api.request("PATCH", f"/v1/users/{_seg(username)}", json=body))

    def delete(self, username: str) -> None:
        """Delete a user (its live connections are closed)."""
        self._api.request("DELETE", f"/v1/users/{_seg(username)}")


class AclSets(_Resource):
    """ACL rule sets: ``/v1/acl/sets``."""

    def list(self, *, limit: int | None = None) -> Iterator[AclSet]:
        """All sets, lazily."""
        return self._iterate("/v1/acl/sets", AclSet.from_json, {}, limit)

    def page(self, cursor: str | None = None, limit: int | None = None) -> Page[AclSet]:
        """One page of sets."""
        return self._page("/v1/acl/sets", AclSet.from_json, {}, cursor, limit)

    def get(self, name: str) -> AclSet:
        """One set, with its ``rules``."""
        return AclSet.from_json(self._api.request("GET", f"/v1/acl/sets/{_seg(name)}"))

    def create(self, name: str, description: str = "") -> AclSet:
        """Create a set."""
        body = {"name": name, "description": description}
        return AclSet.from_json(self._api.request("POST", "/v1/acl/sets", json=body))

    def update(self, name: str, *, description: str) -> AclSet:
        """Change a set's description."""
        body = {"description": description}
        return AclSet.from_json(self._api.request("PATCH", f"/v1/acl/sets/{_seg(name)}", json=body))

    def delete(self, name: str) -> None:
        """Delete a set (409 while attached to a user or key, and for ``default``)."""
        self._api.request("DELETE", f"/v1/acl/sets/{_seg(name)}")


class AclRules(_Resource):
    """ACL rules: ``/v1/acl/rules``."""

    def list(self, *, set: str | None = None, limit: int | None = None) -> Iterator[AclRule]:
        """All rules (of one ``set`` when given), lazily."""
        return self._iterate("/v1/acl/rules", AclRule.from_json, {"set": set}, limit)

    def page(self, cursor: str | None = None, limit: int | None = None, *, set: str | None = None) -> Page[AclRule]:
        """One page of rules."""
        return self._page("/v1/acl/rules", AclRule.from_json, {"set": set}, cursor, limit)

    def get(self, rule_id: str) -> AclRule:
        """One rule."""
        return AclRule.from_json(self._api.request("GET", f"/v1/acl/rules/{_seg(rule_id)}"))

    def create(self, topic: str, action: str, permission: str, *, set: str | None = None) -> AclRule:
        """Create a rule: ``permission`` ``allow``/``deny`` of ``action`` ``publish``/``subscribe``/``all``
        on the filter ``topic``, in ``set`` (default: the ``default`` set)."""
        body: _JSON = {"topic": topic, "action": action, "permission": permission}
        if set is not None:
            body["set"] = set
        return AclRule.from_json(self._api.request("POST", "/v1/acl/rules", json=body))

    def update(
        self,
        rule_id: str,
        *,
        topic: str | None = None,
        action: str | None = None,
        permission: str | None = None,
    ) -> AclRule:
        """Change a rule's topic, action or permission."""
        body = {k: v for k, v in (("topic", topic), ("action", action), ("permission", permission)) if v is not None}
        return AclRule.from_json(self._api.request("PATCH", f"/v1/acl/rules/{_seg(rule_id)}", json=body))

    def delete(self, rule_id: str) -> None:
        """Delete a rule."""
        self._api.request("DELETE", f"/v1/acl/rules/{_seg(rule_id)}")


class Keys(_Resource):
    """API keys: ``/v1/keys``."""

    def list(self, *, limit: int | None = None) -> Iterator[ApiKey]:
        """All keys (revoked ones included), lazily."""
        return self._iterate("/v1/keys", ApiKey.from_json, {}, limit)

    def page(self, cursor: str | None = None, limit: int | None = None) -> Page[ApiKey]:
        """One page of keys."""
        return self._page("/v1/keys", ApiKey.from_json, {}, cursor, limit)

    def get(self, key_id: str) -> ApiKey:
        """One key (never its secret)."""
        return ApiKey.from_json(self._api.request("GET", f"/v1/keys/{_seg(key_id)}"))

    def create(
        self,
        name: str,
        kind: str = "secret",
        *,
        permissions: Iterable[KeyPermission | Mapping[str, str]] | None = None,
        acl_sets: Sequence[str] | None = None,
    ) -> ApiKey:
        """Create a key of ``kind`` ``secret``/``public``/``restricted``; the answer's ``key`` field is
        the secret, shown this once. ``permissions`` are for restricted keys, ``acl_sets`` for public ones."""
        body: _JSON = {"name": name, "kind": kind}
        if permissions is not None:
            body["permissions"] = [p.to_json() if isinstance(p, KeyPermission) else dict(p) for p in permissions]
        if acl_sets is not None:
            body["acl_sets"] = list(acl_sets)
        return ApiKey.from_json(self._api.request("POST", "/v1/keys", json=body))

    def update(self, key_id: str, *, name: str) -> ApiKey:
        """Rename a key."""
        return ApiKey.from_json(self._api.request("PATCH", f"/v1/keys/{_seg(key_id)}", json={"name": name}))

    def delete(self, key_id: str) -> None:
        """Revoke a key (its streams are closed)."""
        self._api.request("DELETE", f"/v1/keys/{_seg(key_id)}")


class Sessions(_Resource):
    """MQTT sessions: ``/v1/sessions``."""

    def list(
        self, state: str | None = None, *, search: str | None = None, limit: int | None = None
    ) -> Iterator[Session]:
        """Sessions lazily; ``state`` is ``active``, ``disconnected`` or ``all`` (``None``: the
        broker's default, ``active``); ``search`` keeps those whose client id or username
        contains it."""
        query = {"state": state, "search": search}
        return self._iterate("/v1/sessions", Session.from_json, query, limit)

    def page(
        self,
        cursor: str | None = None,
        limit: int | None = None,
        *,
        state: str | None = None,
        search: str | None = None,
    ) -> Page[Session]:
        """One page of sessions."""
        query = {"state": state, "search": search}
        return self._page("/v1/sessions", Session.from_json, query, cursor, limit)

    def get(self, client_id: str) -> Session:
        """One session by client id (any characters; percent-encoded here)."""
        return Session.from_json(self._api.request("GET", f"/v1/sessions/{_seg(client_id)}"))

    def disconnect(self, client_id: str) -> None:
        """Disconnect the client (MQTT 5 clients get DISCONNECT 0x98); the session is kept."""
        self._api.request("POST", f"/v1/sessions/{_seg(client_id)}/disconnect")

    def delete(self, client_id: str) -> None:
        """Disconnect the client if connected and discard its session."""
        self._api.request("DELETE", f"/v1/sessions/{_seg(client_id)}")


class OrgResource(_Resource):
    """The key's own org: ``/v1/org``."""

    def get(self) -> Org:
        """The org, with its settings and usage."""
        return Org.from_json(self._api.request("GET", "/v1/org"))

    def update(self, *, name: str | None = None, settings: Settings | None = None) -> Org:
        """Rename the org, or (root key only) change its settings."""
        body: _JSON = {}
        if name is not None:
            body["name"] = name
        if settings is not None:
            body["settings"] = _settings_json(settings)
        return Org.from_json(self._api.request("PATCH", "/v1/org", json=body))


class Orgs(_Resource):
    """All orgs (root key only): ``/v1/orgs``."""

    def list(self, *, limit: int | None = None) -> Iterator[Org]:
        """All orgs, lazily."""
        return self._iterate("/v1/orgs", Org.from_json, {}, limit)

    def page(self, cursor: str | None = None, limit: int | None = None) -> Page[Org]:
        """One page of orgs."""
        return self._page("/v1/orgs", Org.from_json, {}, cursor, limit)

    def get(self, org_id: str) -> Org:
        """One org."""
        return Org.from_json(self._api.request("GET", f"/v1/orgs/{_seg(org_id)}"))

    def create(self, name: str, *, settings: Settings | None = None) -> CreatedOrg:
        """Create an org; the answer holds it and its first secret key (``.key.key``)."""
        body: _JSON = {"name": name}
        if settings is not None:
            body["settings"] = _settings_json(settings)
        return CreatedOrg.from_json(self._api.request("POST", "/v1/orgs", json=body))

    def update(self, org_id: str, *, name: str | None = None, settings: Settings | None = None) -> Org:
        """Rename an org or change its settings (limits)."""
        body: _JSON = {}
        if name is not None:
            body["name"] = name
        if settings is not None:
            body["settings"] = _settings_json(settings)
        return Org.from_json(self._api.request("PATCH", f"/v1/orgs/{_seg(org_id)}", json=body))

    def delete(self, org_id: str) -> None:
        """Delete an org (not ``default``); its connections are closed."""
        self._api.request("DELETE", f"/v1/orgs/{_seg(org_id)}")


class RingmqApi:
    """Client of the broker's HTTP API.

    :param url: the broker's HTTP(S) base URL, e.g. ``http://127.0.0.1:8080``.
    :param key: an API key (``sk_…``, ``rk_…`` or ``pk_…``), sent as ``Authorization: Bearer``.
    :param timeout: seconds for each request (connect, read, write).
    :param retries: how many times a request answered 429 is retried, after sleeping the
        ``Retry-After`` seconds (at most ``max_retry_wait`` per retry). 0: raise at once.
    :param verify: TLS verification: ``True`` (system CAs), ``False``, a CA bundle path or an
        :class:`ssl.SSLContext`.
    :param max_retry_wait: cap of one sleep before a retry, seconds.

    Resources: :attr:`users`, :attr:`acl` (rules), :attr:`acl_sets`, :attr:`keys`, :attr:`sessions`,
    :attr:`org`, :attr:`orgs`. Errors raise :class:`~ringmq.errors.RingmqError` (a subclass per status).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 0,
        verify: bool | str | ssl.SSLContext = True,
        max_retry_wait: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self._verify: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._headers = {"User-Agent": "ringmq-python"}
        if key is not None:
            self._headers["Authorization"] = f"Bearer {key}"
        self._transport = transport
        self._http = self._new_http(httpx.Timeout(timeout))
        self.users = Users(self)
        self.acl = AclRules(self)
        self.acl_sets = AclSets(self)
        self.keys = Keys(self)
        self.sessions = Sessions(self)
        self.org = OrgResource(self)
        self.orgs = Orgs(self)

    def _new_http(self, timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers=self._headers,
            timeout=timeout,
            verify=self._verify,
            transport=self._transport,
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> RingmqApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low level ------------------------------------------------------------------------------------
    def request_raw(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request (retrying 429 as configured); return the 2xx response or raise."""
        attempt = 0
        target = with_query(path, params)
        while True:
            try:
                resp = self._http.request(method, target, json=json, headers=headers)
            except httpx.TransportError as e:
                raise RingmqError(None, "transport_error", f"{method} {path}: {e}") from e
            if resp.status_code < 400:
                return resp
            err = _error(resp)
            if isinstance(err, RateLimitedError) and attempt < self.retries:
                attempt += 1
                wait = err.retry_after if err.retry_after is not None else 1.0
                time.sleep(min(wait, self.max_retry_wait))
                continue
            raise err

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request and return its decoded JSON body (``None`` for an empty one)."""
        resp = self.request_raw(method, path, json=json, params=params, headers=headers)
        if not resp.content:
            return None
        return resp.json()

    # -- publishing -------------------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: PublishPayload = "",
        qos: int = 0,
        retain: bool = False,
        *,
        idempotency_key: str | None = None,
        content_type: str | None = None,
        message_expiry: int | None = None,
        user_properties: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> PublishResult:
        """Publish one message over REST (``POST /v1/publish``); QoS 0 or 1.

        ``payload``: ``str`` is sent as text, ``bytes`` as base64 (the broker publishes the bytes),
        anything else as its JSON text. With ``idempotency_key``, a retry with the same key and body
        publishes nothing and returns the first answer (``replayed=True``).
        """
        msg = PublishMessage(
            topic=topic,
            payload=payload,
            qos=qos,
            retain=retain,
            content_type=content_type,
            message_expiry=message_expiry,
            user_properties=user_properties,
            response_topic=response_topic,
            correlation_data=correlation_data,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        resp = self.request_raw("POST", "/v1/publish", json=msg.to_json(), headers=headers)
        return PublishResult.from_json(resp.json(), replayed=_replayed(resp))

    def publish_batch(
        self,
        messages: Iterable[PublishMessage | Mapping[str, Any]],
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """Publish up to 100 messages in one request (``POST /v1/publish/batch``); the results are
        per message, in order (a message refused does not fail the others)."""
        body = {"messages": [m.to_json() if isinstance(m, PublishMessage) else dict(m) for m in messages]}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        resp = self.request_raw("POST", "/v1/publish/batch", json=body, headers=headers)
        data = resp.json()
        results = data.get("results", []) if isinstance(data, dict) else []
        return BatchResult(
            results=[BatchItemResult.from_json(r) for r in results if isinstance(r, Mapping)],
            replayed=_replayed(resp),
        )

    # -- other routes -------------------------------------------------------------------------------------
    def token_exchange(self, token: str, provider: str | None = None) -> ExchangedCredentials:
        """Exchange a JWT for MQTT credentials (``POST /v1/token-exchange``, ``sk_`` or ``pk_`` key)."""
        body: _JSON = {"token": token}
        if provider is not None:
            body["provider"] = provider
        return ExchangedCredentials.from_json(self.request("POST", "/v1/token-exchange", json=body))

    def openapi(self) -> dict[str, Any]:
        """The broker's OpenAPI document."""
        doc = self.request("GET", "/v1/openapi.json")
        return doc if isinstance(doc, dict) else {}

    def stream(
        self,
        topic: str = "#",
        device: str | None = None,
        ns: str | None = None,
        *,
        last_event_id: str | None = None,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        read_timeout: float = 60.0,
        on_gap: Callable[[SseEvent], object] | None = None,
    ) -> EventStream:
        """Stream the messages matching the filter ``topic`` (optionally only from client id
        ``device`` or namespace ``ns``) as :class:`~ringmq.types.StreamMessage` objects, resuming
        after a dropped connection (see :class:`~ringmq.stream.EventStream`). The broker sends a
        heartbeat every 15 s, so ``read_timeout`` detects a dead connection."""
        params = {"topic": topic}
        if device is not None:
            params["device"] = device
        if ns is not None:
            params["ns"] = ns
        http = self._new_http(httpx.Timeout(self.timeout, read=read_timeout))
        return EventStream(
            http,
            params,
            last_event_id=last_event_id,
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            on_gap=on_gap,
        )


def _replayed(resp: httpx.Response) -> bool:
    return str(resp.headers.get("idempotent-replayed", "")).lower() == "true"


def _error(resp: httpx.Response) -> RingmqError:
    body: Any
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return error_from_response(resp.status_code, body, resp.headers)
