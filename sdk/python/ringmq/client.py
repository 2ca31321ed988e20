"""The synchronous MQTT client, over paho-mqtt 2.x.

Its network loop runs in a background thread started by :meth:`RingmqClient.connect`; it
reconnects by itself when the connection drops (waiting ``reconnect_min_delay`` seconds, doubling
up to ``reconnect_max_delay``) and subscribes every registered handler again on each connection.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .errors import RingmqConnectionError, RingmqError
from .payload import Payload, PublishPayload, decode_payload, encode_payload

__all__ = ["RingmqClient", "MessageHandler", "topic_matches"]

log = logging.getLogger("ringmq")

#: A synchronous message handler: ``handler(topic, payload)``.
MessageHandler = Callable[[str, Payload], object]
#: The type of a decorated handler (returned unchanged by the decorator).
H = TypeVar("H", bound=Callable[[str, Payload], object])


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT filter ``pattern`` (``+``, ``#``, ``$share/G/…``)."""
    if pattern.startswith("$share/"):
        parts = pattern.split("/", 2)
        if len(parts) < 3:
            return False
        pattern = parts[2]
    return bool(mqtt.topic_matches_sub(pattern, topic))


@dataclass
class _Route:
    pattern: str
    qos: int
    handler: Callable[[str, Payload], object]


class RingmqClient:
    """An MQTT client for ringmq.

    :param host: broker host name or address.
    :param port: MQTT port (1883; usually 8883 with ``tls``).
    :param username: MQTT username (``name`` for the ``default`` org, ``name@org_id`` otherwise).
    :param password: its password.
    :param client_id: the MQTT client id; ``None`` picks ``ringmq-py-<random>``.
    :param tls: connect over TLS (the system CAs, or ``ca_file``).
    :param ca_file: a CA bundle to verify the broker with (implies ``tls``).
    :param protocol: 5 (MQTT 5, the default) or 4 (MQTT 3.1.1).
    :param keepalive: keep-alive in seconds.
    :param session_expiry: keep the session (subscriptions, queued QoS 1/2 messages) this many
        seconds after a disconnection (MQTT 5 Session Expiry Interval; with MQTT 3.1.1 any value
        means a persistent session). ``None``: the session ends with the connection.
    :param connect_timeout: seconds :meth:`connect` waits for the broker's CONNACK.
    :param reconnect_min_delay: first wait before reconnecting after a drop, seconds.
    :param reconnect_max_delay: cap of the doubling wait, seconds.

    Example::

        client = RingmqClient(host="127.0.0.1", username="alice", password="secret123")

        @client.on_message("agents/+/state")
        def state(topic: str, payload: Payload) -> None:
            print(topic, payload)

        client.connect()
        client.publish("agents/7/state", {"ok": True})
        client.loop_forever()
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
        if protocol not in (4, 5):
            raise ValueError("protocol must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        self.host = host
        self.port = port
        self.username = username
        self.client_id = client_id if client_id is not None else f"ringmq-py-{uuid.uuid4().hex[:12]}"
        self.protocol = protocol
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.connect_timeout = connect_timeout
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self._routes: list[_Route] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._connack = threading.Event()
        self._connack_rc: ReasonCode | None = None
        self._ever_connected = False
        self._connected = False
        self._thread: threading.Thread | None = None
        self._delay = reconnect_min_delay
        self.connections = 0  #: successful connections so far (1 + reconnections)

        self._mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if protocol == 5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if protocol == 5 else session_expiry is None,
        )
        if username is not None:
            self._mqtt.username_pw_set(username, password)
        if tls or ca_file is not None:
            self._mqtt.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_message = self._on_message
        # Writes happen on the network thread only: with a write-registration callback set, paho
        # queues a packet and wakes the loop instead of writing from the publishing thread.
        self._mqtt.on_socket_register_write = self._on_register_write

    # -- context manager --------------------------------------------------------------------------
    def __enter__(self) -> RingmqClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # -- handlers -----------------------------------------------------------------------------------
    def on_message(self, pattern: str, qos: int = 0) -> Callable[[H], H]:
        """Decorator: call ``handler(topic, payload)`` for every message matching ``pattern``.

        The client subscribes to ``pattern`` with ``qos`` on every connection (at once when already
        connected). ``payload`` is the decoded JSON value, else the text, else the bytes. An
        exception raised by the handler is logged (logger ``ringmq``), not propagated.
        """

        def register(handler: H) -> H:
            self.add_handler(pattern, handler, qos)
            return handler

        return register

    def add_handler(self, pattern: str, handler: Callable[[str, Payload], object], qos: int = 0) -> None:
        """Register ``handler`` for ``pattern`` (the non-decorator form of :meth:`on_message`)."""
        with self._lock:
            self._routes.append(_Route(pattern, qos, handler))
            connected = self._connected
        if connected:
            self._mqtt.subscribe(pattern, qos)

    # -- connection ---------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        """True while the client holds an accepted connection."""
        return self._connected

    @property
    def is_running(self) -> bool:
        """True from :meth:`connect` to :meth:`disconnect` (connected or reconnecting)."""
        return self._thread is not None and self._thread.is_alive()

    def connect(self) -> None:
        """Connect, wait for the broker's CONNACK, then keep the connection up in the background.

        :raises RingmqConnectionError: the broker could not be reached, did not answer within
            ``connect_timeout``, or refused the connection (``reason_code``, ``detail``).
        """
        if self.is_running:
            return
        self._stop.clear()
        self._closing.clear()
        self._connack.clear()
        self._connack_rc = None
        self._ever_connected = False
        self._delay = self.reconnect_min_delay
        self._mqtt.connect_timeout = self.connect_timeout
        try:
            props: Properties | None = None
            if self.protocol == 5 and self.session_expiry is not None:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
                props.SessionExpiryInterval = self.session_expiry
            self._mqtt.connect(self.host, self.port, self.keepalive, properties=props)
        except (OSError, ssl.SSLError) as e:
            raise RingmqConnectionError(
                "connect_failed", f"cannot connect to {self.host}:{self.port}: {e}"
            ) from e
        self._thread = threading.Thread(target=self._run, name=f"ringmq-{self.client_id}", daemon=True)
        self._thread.start()
        if not self._connack.wait(self.connect_timeout):
            self._shutdown()
            raise RingmqConnectionError(
                "connect_timeout", f"no CONNACK from {self.host}:{self.port} within {self.connect_timeout}s"
            )
        rc = self._connack_rc
        if rc is None or rc.is_failure:
            self._shutdown()
            if rc is None:
                raise RingmqConnectionError(
                    "connection_lost", f"{self.host}:{self.port} closed the connection before CONNACK"
                )
            raise RingmqConnectionError(
                "connection_refused",
                f"broker refused the connection: {rc} (0x{rc.value:02X})",
                reason_code=rc.value,
            )

    def disconnect(self) -> None:
        """Send DISCONNECT, stop the background loop and make :meth:`loop_forever` return."""
        if self._thread is None:
            self._stop.set()
            return
        self._closing.set()
        in_handler = self._thread is threading.current_thread()
        if self._connected:
            self._mqtt.disconnect()  # queued: the network thread sends it, then closes the socket
            deadline = time.monotonic() + 2.0
            while not in_handler and self._mqtt.socket() is not None and time.monotonic() < deadline:
                time.sleep(0.01)
        self._stop.set()
        if not in_handler:
            self._thread.join(timeout=5.0)
        self._thread = None
        self._connected = False

    def loop_forever(self) -> None:
        """Block until :meth:`disconnect` is called (connecting first if needed); reconnections
        happen in the background. Ctrl-C disconnects and returns."""
        if not self.is_running:
            self.connect()
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.disconnect()

    def publish(
        self,
        topic: str,
        payload: PublishPayload = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> int:
        """Publish ``payload`` to ``topic``: ``dict``/``list`` (and other JSON values) as JSON, ``str``
        as UTF-8, ``bytes`` as they are. Returns the message id.

        A QoS 1/2 message published while reconnecting is sent once the connection is back; a QoS 0
        message then is dropped. With ``wait=True`` it returns once the broker acknowledged it
        (``RingmqError`` after ``timeout`` seconds).
        """
        info = self._mqtt.publish(topic, encode_payload(payload), qos, retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise RingmqError(None, "publish_failed", mqtt.error_string(info.rc))
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            log.warning("ringmq: not connected, QoS 0 message to %s dropped", topic)
        if wait:
            if not self._wait_published(info, timeout):
                raise RingmqError(None, "publish_timeout", f"no acknowledgement within {timeout}s")
        return int(info.mid)

    def _wait_published(self, info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        if info.is_published():
            return True
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            pass
        return bool(info.is_published())

    # -- network loop (background thread) ------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            rc = self._mqtt.loop(timeout=0.2)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                continue
            self._connected = False
            if self._closing.is_set() or self._stop.is_set():
                break
            if not self._ever_connected:
                # The first connection failed: connect() reports it.
                self._connack.set()
                return
            self._reconnect()
        # disconnect() from a handler: send the queued DISCONNECT before leaving.
        deadline = time.monotonic() + 2.0
        while self._closing.is_set() and self._mqtt.socket() is not None and time.monotonic() < deadline:
            if self._mqtt.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break

    def _reconnect(self) -> None:
        while not self._stop.is_set():
            delay = self._delay
            self._delay = min(self._delay * 2, self.reconnect_max_delay)
            log.info("ringmq: connection lost, reconnecting in %.1fs", delay)
            if self._stop.wait(delay):
                return
            try:
                self._mqtt.reconnect()
                return
            except (OSError, ssl.SSLError) as e:
                log.info("ringmq: reconnect to %s:%s failed: %s", self.host, self.port, e)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: object) -> None:
        """Nothing to do: the network thread's select() sees the pending write."""

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            if self._ever_connected:
                log.warning("ringmq: broker refused the reconnection: %s", reason_code)
            else:
                self._connack_rc = reason_code
                self._connack.set()
            return
        self._delay = self.reconnect_min_delay
        with self._lock:
            self._connected = True
            self.connections += 1
            patterns: dict[str, int] = {}
            for r in self._routes:
                patterns[r.pattern] = max(patterns.get(r.pattern, 0), r.qos)
        if patterns:
            client.subscribe(list(patterns.items()))
        if not self._ever_connected:
            self._ever_connected = True
            self._connack_rc = reason_code
            self._connack.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected = False
        if not self._stop.is_set():
            log.info("ringmq: disconnected: %s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        payload = decode_payload(msg.payload)
        with self._lock:
            handlers = [r.handler for r in self._routes if topic_matches(r.pattern, topic)]
        for handler in handlers:
            self._dispatch(handler, topic, payload)

    def _dispatch(self, handler: Callable[[str, Payload], object], topic: str, payload: Payload) -> None:
        """Run one handler (overridden by the asyncio client). Exceptions are logged."""
        try:
            handler(topic, payload)
        except Exception:  # a handler's failure must not stop the network loop
            log.exception("ringmq: handler %r failed on %s", handler, topic)

    def _shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
        self._connected = False
        try:
            self._mqtt.disconnect()
            self._mqtt.loop_write()  # the network thread is gone: send it (and close) here
        except (OSError, ValueError):
            pass
