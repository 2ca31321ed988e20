"""A small synchronous wrapper around paho-mqtt 2.x for the tests.

Every wait is bounded. The network loop runs in a thread that calls `Client.loop()` itself instead of
paho's `loop_start()`, so a connection the broker closes stays closed: paho's automatic reconnect
would otherwise fight the broker in takeover and shutdown tests.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 5.0  # default bound for any single wait, seconds

# Which broker the suite runs against (conftest.py starts it): "ringmq" or "mosquitto".
BROKER_KIND = os.environ.get("BROKER", "ringmq")


def is_ringmq() -> bool:
    return BROKER_KIND == "ringmq"

# paho Properties attribute name -> our snake_case key
_PROP_NAMES = {
    "PayloadFormatIndicator": "payload_format_indicator",
    "MessageExpiryInterval": "message_expiry_interval",
    "ContentType": "content_type",
    "ResponseTopic": "response_topic",
    "CorrelationData": "correlation_data",
    "SubscriptionIdentifier": "subscription_identifier",
    "SessionExpiryInterval": "session_expiry_interval",
    "AssignedClientIdentifier": "assigned_client_identifier",
    "ServerKeepAlive": "server_keep_alive",
    "ReasonString": "reason_string",
    "ReceiveMaximum": "receive_maximum",
    "TopicAliasMaximum": "topic_alias_maximum",
    "TopicAlias": "topic_alias",
    "MaximumQoS": "maximum_qos",
    "RetainAvailable": "retain_available",
    "UserProperty": "user_property",
    "MaximumPacketSize": "maximum_packet_size",
    "WildcardSubscriptionAvailable": "wildcard_subscription_available",
    "SubscriptionIdentifierAvailable": "subscription_identifier_available",
    "SharedSubscriptionAvailable": "shared_subscription_available",
    "WillDelayInterval": "will_delay_interval",
}


def props_dict(p: Properties | None) -> dict:
    out: dict = {}
    if p is None:
        return out
    for attr, key in _PROP_NAMES.items():
        if hasattr(p, attr):
            out[key] = getattr(p, attr)
    return out


def make_props(packet_type: int, **kw) -> Properties:
    """make_props(PacketTypes.PUBLISH, MessageExpiryInterval=5, UserProperty=[("a", "b")])"""
    p = Properties(packet_type)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def publish_props(**kw) -> Properties:
    return make_props(PacketTypes.PUBLISH, **kw)


def unique(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    props: dict = field(default_factory=dict)


class Client:
    """A connected paho client with queues for what it receives.

    version: 3 (MQTT 3.1.1) or 5.  clean: v3 clean session / v5 clean start.
    """

    def __init__(self, host: str, port: int, client_id: str | None = None, version: int = 5,
                 clean: bool = True, keepalive: int = 60, session_expiry: int | None = None,
                 will: dict | None = None, connect_props: dict | None = None, max_inflight: int = 10,
                 username: str | None = None, password: str | None = None):
        self.host, self.port = host, port
        self.version = version
        self.client_id = unique("py") if client_id is None else client_id
        self.clean = clean
        self.keepalive = keepalive
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol,
                             clean_session=(clean if version != 5 else None))
        self.c.max_inflight_messages_set(max_inflight)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.c.max_queued_messages_set(0)
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.connack = threading.Event()
        self.connack_rc: int | None = None
        self.session_present: bool | None = None
        self.connack_props: dict = {}
        self.disconnected = threading.Event()
        self.disconnect_rc: int | None = None
        self.disconnect_props: dict = {}
        self._acks: dict[int, tuple[list[int], dict]] = {}
        self._acks_cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connect_props = dict(connect_props or {})
        if session_expiry is not None:
            self._connect_props["SessionExpiryInterval"] = session_expiry
        if will:
            wp = None
            if will.get("props"):
                wp = make_props(PacketTypes.WILLMESSAGE, **will["props"])
            self.c.will_set(will["topic"], will.get("payload", b""), will.get("qos", 0),
                            will.get("retain", False), properties=wp)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_subscribe
        self.c.on_disconnect = self._on_disconnect

    # -- callbacks (network thread) -------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_rc = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        self.session_present = bool(flags.session_present)
        self.connack_props = props_dict(properties)
        self.connack.set()

    def _on_message(self, client, userdata, m):
        self.messages.put(Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup), m.mid,
                              props_dict(getattr(m, "properties", None))))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        codes = [rc.value if hasattr(rc, "value") else int(rc) for rc in (reason_codes or [])]
        with self._acks_cv:
            self._acks[mid] = (codes, props_dict(properties))
            self._acks_cv.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.disconnect_rc is None:
            self.disconnect_rc = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            self.disconnect_props = props_dict(properties)
        self.disconnected.set()

    def _run(self):
        while not self._stop.is_set():
            rc = self.c.loop(timeout=0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break

    # -- operations (test thread) ---------------------------------------------------------------
    def connect(self, timeout: float = WAIT, expect_rc: int | None = 0) -> "Client":
        kw = {}
        if self.version == 5:
            kw["clean_start"] = self.clean
            if self._connect_props:
                kw["properties"] = make_props(PacketTypes.CONNECT, **self._connect_props)
        self.c.connect(self.host, self.port, self.keepalive, **kw)
        self._thread = threading.Thread(target=self._run, name=f"paho-{self.client_id}", daemon=True)
        # paho writes from the calling thread unless it knows a loop thread owns the socket; then
        # it queues the packet and wakes the loop. Over TLS a read and a write on one SSL object
        # from two threads at once can abort the interpreter (OpenSSL), so it must know ours.
        self.c._thread = self._thread
        self._thread.start()
        assert self.connack.wait(timeout), f"{self.client_id}: no CONNACK within {timeout}s"
        if expect_rc is not None:
            assert self.connack_rc == expect_rc, f"{self.client_id}: CONNACK {self.connack_rc:#x}"
        return self

    def _wait_ack(self, mid: int, timeout: float) -> tuple[list[int], dict]:
        deadline = time.monotonic() + timeout
        with self._acks_cv:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                assert left > 0, f"{self.client_id}: no SUBACK/UNSUBACK for mid {mid}"
                self._acks_cv.wait(left)
            return self._acks.pop(mid)

    def subscribe(self, topic, qos: int = 1, no_local: bool = False, retain_as_published: bool = False,
                  retain_handling: int = 0, sub_id: int | None = None, props: dict | None = None,
                  timeout: float = WAIT) -> list[int]:
        """Subscribe to one filter or a list of filters; returns the SUBACK reason codes."""
        topics = topic if isinstance(topic, list) else [topic]
        if self.version == 5:
            opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
                                    retainHandling=retain_handling)
            sp = dict(props or {})
            if sub_id is not None:
                sp["SubscriptionIdentifier"] = sub_id
            properties = make_props(PacketTypes.SUBSCRIBE, **sp) if sp else None
            rc, mid = self.c.subscribe([(t, opts) for t in topics], properties=properties)
        else:
            rc, mid = self.c.subscribe([(t, qos) for t in topics])
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        codes, self.last_ack_props = self._wait_ack(mid, timeout)
        return codes

    def unsubscribe(self, topic, timeout: float = WAIT) -> list[int]:
        topics = topic if isinstance(topic, list) else [topic]
        rc, mid = self.c.unsubscribe(topics)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        codes, self.last_ack_props = self._wait_ack(mid, timeout)
        return codes

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                props: dict | None = None, wait: bool = True, timeout: float = WAIT):
        properties = publish_props(**props) if props else None
        info = self.c.publish(topic, payload, qos, retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if wait and qos > 0:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"{self.client_id}: QoS {qos} publish to {topic} not acknowledged"
        return info

    def get(self, timeout: float = WAIT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def get_n(self, n: int, timeout: float = WAIT) -> list[Msg]:
        """Exactly-n messages, waiting at most `timeout` in total."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(0.0, left)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: got {len(out)} of {n} messages in {timeout}s: "
                    f"{[(m.topic, m.payload[:20]) for m in out[-5:]]}") from None
        return out

    def expect_none(self, duration: float = 0.5) -> None:
        try:
            m = self.messages.get(timeout=duration)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m}")

    def drain(self, duration: float = 0.3) -> list[Msg]:
        """Everything that arrives within `duration` seconds."""
        out = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                return out

    def wait_disconnected(self, timeout: float = WAIT) -> int | None:
        assert self.disconnected.wait(timeout), f"{self.client_id}: still connected after {timeout}s"
        return self.disconnect_rc

    def is_connected(self) -> bool:
        return self.c.is_connected() and not self.disconnected.is_set()

    def disconnect(self, reason_code: int | None = None, props: dict | None = None,
                   timeout: float = WAIT) -> None:
        """A normal DISCONNECT (v5: with `reason_code`), then wait until paho closed the socket."""
        kw = {}
        if self.version == 5 and reason_code is not None:
            kw["reasoncode"] = ReasonCode(PacketTypes.DISCONNECT, identifier=reason_code)
        if self.version == 5 and props:
            kw["properties"] = make_props(PacketTypes.DISCONNECT, **props)
        self.c.disconnect(**kw)
        self.disconnected.wait(timeout)
        self._join()

    def drop(self) -> None:
        """Close the TCP connection without DISCONNECT (a device that loses its link)."""
        self._join()
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=WAIT)

    def close(self) -> None:
        """Teardown: disconnect if still connected, stop the loop thread."""
        try:
            if self._thread is not None and self.is_connected() and not self._stop.is_set():
                self.c.disconnect()
                self.disconnected.wait(1.0)
        except Exception:
            pass
        self._join()
        try:
            sock = self.c.socket()
            if sock is not None:
                sock.close()
        except Exception:
            pass


def wait_until(pred, timeout: float = WAIT, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def numbered(n: int) -> list[bytes]:
    return [f"{i:06d}".encode() for i in range(n)]


def assert_in_order(msgs, n: int) -> None:
    seq = [int(m.payload) for m in msgs]
    assert seq == list(range(n)), f"out of order or missing: first bad index " \
        f"{next((i for i, (a, b) in enumerate(zip(seq, range(n))) if a != b), len(seq))}"
