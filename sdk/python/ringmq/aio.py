"""The asyncio MQTT client: the same API as :class:`ringmq.RingmqClient`, awaitable.

The MQTT network loop still runs in a background thread (paho-mqtt); received messages are handed
to the event loop the client was connected from, where sync handlers are called and async handlers
are scheduled as tasks. A handler's exception is logged (logger ``ringmq``), never propagated.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, TypeVar

from .client import RingmqClient
from .payload import Payload, PublishPayload

__all__ = ["AsyncRingmqClient", "AsyncMessageHandler"]

log = logging.getLogger("ringmq")

#: A handler of the asyncio client: sync, or a coroutine function.
AsyncMessageHandler = Callable[[str, Payload], "Awaitable[object] | object"]
H = TypeVar("H", bound=Callable[[str, Payload], object])
T = TypeVar("T")


class _LoopBridge(RingmqClient):
    """The sync client whose handlers run on an asyncio event loop."""

    loop: asyncio.AbstractEventLoop | None = None
    tasks: set[asyncio.Task[Any]]

    def _dispatch(self, handler: Callable[[str, Payload], object], topic: str, payload: Payload) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            log.warning("ringmq: no event loop for the message on %s", topic)
            return
        try:
            loop.call_soon_threadsafe(self._run_handler, handler, topic, payload)
        except RuntimeError:  # the loop closed meanwhile
            log.warning("ringmq: event loop closed, message on %s dropped", topic)

    def _run_handler(self, handler: Callable[[str, Payload], object], topic: str, payload: Payload) -> None:
        try:
            result = handler(topic, payload)
        except Exception:  # a handler's failure must not stop anything else
            log.exception("ringmq: handler %r failed on %s", handler, topic)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self.tasks.add(task)
            task.add_done_callback(lambda t: self._task_done(t, handler, topic))

    def _task_done(self, task: asyncio.Task[Any], handler: object, topic: str) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("ringmq: handler %r failed on %s", handler, topic, exc_info=exc)


class AsyncRingmqClient:
    """An asyncio MQTT client for ringmq; the parameters are those of :class:`RingmqClient`.

    Example::

        client = AsyncRingmqClient(host="127.0.0.1", username="alice", password="secret123")

        @client.on_message("agents/+/state")
        async def state(topic: str, payload: Payload) -> None:
            print(topic, payload)

        await client.connect()
        await client.publish("agents/7/state", {"ok": True})
        await client.loop_forever()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        *,
        protocol: int = 5,
        keepalive: int = 60,
        session_expiry: int | None = None,
        connect_timeout: float = 10.0,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
    ) -> None:
        self._client = _LoopBridge(
            host=host,
            port=port,
            username=username,
            password=password,
            client_id=client_id,
            tls=tls,
            ca_file=ca_file,
            protocol=protocol,
            keepalive=keepalive,
            session_expiry=session_expiry,
            connect_timeout=connect_timeout,
            reconnect_min_delay=reconnect_min_delay,
            reconnect_max_delay=reconnect_max_delay,
        )
        self._client.tasks = set()
        self._stopped: asyncio.Event | None = None

    @property
    def client_id(self) -> str:
        """The MQTT client id."""
        return self._client.client_id

    @property
    def is_connected(self) -> bool:
        """True while the client holds an accepted connection."""
        return self._client.is_connected

    @property
    def connections(self) -> int:
        """Successful connections so far (1 + reconnections)."""
        return self._client.connections

    async def __aenter__(self) -> AsyncRingmqClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    def on_message(self, pattern: str, qos: int = 0) -> Callable[[H], H]:
        """Decorator: call ``handler(topic, payload)`` (sync, or ``async def``) for every message
        matching ``pattern``; subscribed on every (re)connection."""

        def register(handler: H) -> H:
            self._client.add_handler(pattern, handler, qos)
            return handler

        return register

    def add_handler(self, pattern: str, handler: AsyncMessageHandler, qos: int = 0) -> None:
        """Register ``handler`` for ``pattern`` (the non-decorator form of :meth:`on_message`)."""
        self._client.add_handler(pattern, handler, qos)

    async def connect(self) -> None:
        """Connect and wait for the CONNACK.

        :raises RingmqConnectionError: unreachable, timed out, or refused (with the reason).
        """
        self._client.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        await self._in_thread(self._client.connect)

    async def disconnect(self) -> None:
        """Disconnect and make :meth:`loop_forever` return."""
        await self._in_thread(self._client.disconnect)
        if self._stopped is not None:
            self._stopped.set()

    async def publish(
        self,
        topic: str,
        payload: PublishPayload = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> int:
        """Publish like :meth:`RingmqClient.publish`; with ``wait=True`` await the broker's ack."""
        if not wait:
            return self._client.publish(topic, payload, qos, retain)
        return await self._in_thread(
            lambda: self._client.publish(topic, payload, qos, retain, wait=True, timeout=timeout)
        )

    async def loop_forever(self) -> None:
        """Run until :meth:`disconnect` (connecting first if needed); reconnections happen in the
        background. Cancelling it disconnects."""
        if not self._client.is_running:
            await self.connect()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            await self.disconnect()
            raise

    @staticmethod
    async def _in_thread(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

