"""A tiny MQTT 3.1.1 / 5.0 packet encoder and decoder over a plain socket (standard library only).

The paho client hides exactly what several tests must see or get wrong on purpose: packet ids, DUP
flags, unacknowledged inflight messages, outbound topic aliases, malformed bytes. `RawClient` speaks
bytes, and every read it does is bounded by a timeout.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
    8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "AUTH",
}

# MQTT 5 property identifiers -> (name, kind). Kinds: byte, u16, u32, varint, str, bin, pair.
PROPS = {
    0x01: ("payload_format_indicator", "byte"),
    0x02: ("message_expiry_interval", "u32"),
    0x03: ("content_type", "str"),
    0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_identifier", "varint"),
    0x11: ("session_expiry_interval", "u32"),
    0x12: ("assigned_client_identifier", "str"),
    0x13: ("server_keep_alive", "u16"),
    0x15: ("authentication_method", "str"),
    0x16: ("authentication_data", "bin"),
    0x17: ("request_problem_information", "byte"),
    0x18: ("will_delay_interval", "u32"),
    0x19: ("request_response_information", "byte"),
    0x1A: ("response_information", "str"),
    0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"),
    0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"),
    0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"),
    0x25: ("retain_available", "byte"),
    0x26: ("user_property", "pair"),
    0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_subscription_available", "byte"),
    0x29: ("subscription_identifier_available", "byte"),
    0x2A: ("shared_subscription_available", "byte"),
}
PROP_IDS = {name: (pid, kind) for pid, (name, kind) in PROPS.items()}
# Properties that may appear more than once; decoded as lists.
MULTI = {"user_property", "subscription_identifier"}


class Closed(Exception):
    """The peer closed the connection."""


class Malformed(Exception):
    """The peer sent bytes this decoder cannot parse."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s16(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def encode_props(props: dict | None) -> bytes:
    out = bytearray()
    for name, value in (props or {}).items():
        pid, kind = PROP_IDS[name]
        values = value if name in MULTI and isinstance(value, list) else [value]
        for v in values:
            out.append(pid)
            if kind == "byte":
                out.append(v)
            elif kind == "u16":
                out += struct.pack(">H", v)
            elif kind == "u32":
                out += struct.pack(">I", v)
            elif kind == "varint":
                out += varint(v)
            elif kind in ("str", "bin"):
                out += s16(v)
            elif kind == "pair":
                out += s16(v[0]) + s16(v[1])
    return varint(len(out)) + bytes(out)


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Malformed("short packet")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def varint(self) -> int:
        n, mult = 0, 1
        for _ in range(4):
            b = self.u8()
            n += (b & 0x7F) * mult
            if not b & 0x80:
                return n
            mult *= 128
        raise Malformed("varint too long")

    def bin(self) -> bytes:
        return self.take(self.u16())

    def str(self) -> str:
        return self.bin().decode("utf-8")

    def props(self) -> dict:
        end = self.varint()
        end += self.pos
        out: dict = {}
        while self.pos < end:
            pid = self.varint()
            if pid not in PROPS:
                raise Malformed(f"unknown property 0x{pid:02x}")
            name, kind = PROPS[pid]
            v = {
                "byte": self.u8, "u16": self.u16, "u32": self.u32, "varint": self.varint,
                "str": self.str, "bin": self.bin, "pair": lambda: (self.str(), self.str()),
            }[kind]()
            if name in MULTI:
                out.setdefault(name, []).append(v)
            else:
                out[name] = v
        return out


@dataclass
class Packet:
    type: int
    flags: int
    raw: bytes
    packet_id: int | None = None
    reason_code: int | None = None
    reason_codes: list = field(default_factory=list)
    props: dict = field(default_factory=dict)
    session_present: bool = False
    topic: str = ""
    payload: bytes = b""
    qos: int = 0
    dup: bool = False
    retain: bool = False

    @property
    def name(self) -> str:
        return NAMES.get(self.type, str(self.type))

    def __repr__(self) -> str:
        parts = [self.name]
        for k in ("packet_id", "reason_code", "reason_codes", "props", "topic", "qos", "dup", "retain"):
            v = getattr(self, k)
            if v not in (None, [], {}, "", 0, False):
                parts.append(f"{k}={v!r}")
        if self.type == PUBLISH:
            parts.append(f"payload={self.payload[:40]!r}")
        return "<" + " ".join(parts) + ">"


def decode(first: int, body: bytes, version: int) -> Packet:
    t, flags = first >> 4, first & 0x0F
    p = Packet(type=t, flags=flags, raw=body)
    r = Reader(body)
    v5 = version == 5
    if t == CONNACK:
        p.session_present = bool(r.u8() & 1)
        p.reason_code = r.u8()
        if v5 and r.left():
            p.props = r.props()
    elif t == PUBLISH:
        p.qos, p.dup, p.retain = (flags >> 1) & 3, bool(flags & 8), bool(flags & 1)
        p.topic = r.bin().decode("utf-8")
        if p.qos:
            p.packet_id = r.u16()
        if v5:
            p.props = r.props()
        p.payload = r.take(r.left())
    elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.packet_id = r.u16()
        p.reason_code = 0
        if v5 and r.left():
            p.reason_code = r.u8()
            if r.left():
                p.props = r.props()
    elif t in (SUBACK, UNSUBACK):
        p.packet_id = r.u16()
        if v5:
            p.props = r.props()
        p.reason_codes = list(r.take(r.left()))
    elif t == DISCONNECT:
        p.reason_code = 0
        if r.left():
            p.reason_code = r.u8()
            if r.left():
                p.props = r.props()
    elif t == AUTH:
        if r.left():
            p.reason_code = r.u8()
            if r.left():
                p.props = r.props()
    return p


def connect_packet(client_id: str | bytes = "", version: int = 5, clean: bool = True, keepalive: int = 60,
                   props: dict | None = None, will: dict | None = None, username: str | None = None,
                   password: bytes | None = None) -> bytes:
    """will: {"topic", "payload", "qos", "retain", "props"}."""
    flags = 0x02 if clean else 0
    payload = s16(client_id)
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        if version == 5:
            payload += encode_props(will.get("props"))
        payload += s16(will["topic"]) + s16(will.get("payload", b""))
    if username is not None:
        flags |= 0x80
        payload += s16(username)
    if password is not None:
        flags |= 0x40
        payload += s16(password)
    level = {3: 3, 4: 4, 5: 5}[version]
    name = b"MQIsdp" if version == 3 else b"MQTT"
    body = s16(name) + bytes([level, flags]) + struct.pack(">H", keepalive)
    if version == 5:
        body += encode_props(props)
    return packet(0x10, body + payload)


def publish_packet(topic: str | bytes, payload: bytes = b"", qos: int = 0, retain: bool = False,
                   packet_id: int | None = None, props: dict | None = None, dup: bool = False,
                   version: int = 5) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = s16(topic)
    if qos:
        body += struct.pack(">H", packet_id if packet_id is not None else 1)
    if version == 5:
        body += encode_props(props)
    return packet(first, body + payload)


def ack_packet(kind: int, packet_id: int, reason_code: int | None = None, version: int = 5) -> bytes:
    first = (kind << 4) | (0x02 if kind == PUBREL else 0)
    body = struct.pack(">H", packet_id)
    if version == 5 and reason_code not in (None, 0):
        body += bytes([reason_code])
    return packet(first, body)


def subscribe_packet(packet_id: int, filters: list, props: dict | None = None, version: int = 5) -> bytes:
    """filters: [(filter, options_byte)] where options = qos | nl<<2 | rap<<3 | rh<<4."""
    body = struct.pack(">H", packet_id)
    if version == 5:
        body += encode_props(props)
    for f, opts in filters:
        body += s16(f) + bytes([opts])
    return packet(0x82, body)


def unsubscribe_packet(packet_id: int, filters: list, version: int = 5) -> bytes:
    body = struct.pack(">H", packet_id)
    if version == 5:
        body += encode_props(None)
    for f in filters:
        body += s16(f)
    return packet(0xA2, body)


def disconnect_packet(reason_code: int = 0, props: dict | None = None, version: int = 5) -> bytes:
    if version != 5 or (reason_code == 0 and not props):
        return b"\xe0\x00"
    return packet(0xE0, bytes([reason_code]) + encode_props(props))


PINGREQ_BYTES = b"\xc0\x00"


class RawClient:
    """One MQTT connection over a blocking socket with explicit, bounded reads."""

    def __init__(self, host: str, port: int, version: int = 5, timeout: float = 5.0):
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.next_id = 1

    # -- plumbing -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Close with a TCP reset (no FIN handshake, like a device losing power mid-stream)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no packet before the deadline")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet before the deadline") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(str(e)) from None
        if not chunk:
            raise Closed("peer closed the connection")
        self.buf += chunk

    def recv(self, timeout: float | None = None) -> Packet:
        """The next packet; TimeoutError if none arrives in time, Closed if the peer closed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                complete = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= i + n:
                    first, body = self.buf[0], bytes(self.buf[i:i + n])
                    del self.buf[:i + n]
                    return decode(first, body, self.version)
            self._fill(deadline)

    def expect(self, kind: int, timeout: float | None = None) -> Packet:
        p = self.recv(timeout)
        assert p.type == kind, f"expected {NAMES[kind]}, got {p!r}"
        return p

    def expect_silence(self, duration: float) -> None:
        """Nothing arrives during `duration` seconds (and the connection stays open)."""
        try:
            p = self.recv(duration)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {p!r}")

    def expect_closed(self, timeout: float = 5.0) -> list:
        """Read until the peer closes; returns the packets read on the way. Fails if still open."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.recv(max(0.0, deadline - time.monotonic())))
            except Closed:
                return got
            except TimeoutError:
                raise AssertionError(f"connection still open after {timeout}s (read {got!r})") from None
            except Malformed:
                # Whatever garbage the broker sent, it must still close; drop the buffer.
                self.buf.clear()

    def pid(self) -> int:
        p = self.next_id
        self.next_id = self.next_id % 65535 + 1
        return p

    # -- MQTT operations ------------------------------------------------------------------------
    def connect(self, client_id: str | bytes = "", clean: bool = True, keepalive: int = 60, props=None,
                will=None, username=None, password=None, expect_ok: bool = True) -> Packet:
        self.send(connect_packet(client_id, self.version, clean, keepalive, props, will, username, password))
        ack = self.expect(CONNACK)
        if expect_ok:
            assert ack.reason_code == 0, f"CONNECT refused: {ack!r}"
        return ack

    def subscribe(self, *filters, qos: int = 1, options: int | None = None, props=None) -> Packet:
        pid = self.pid()
        opts = qos if options is None else options
        self.send(subscribe_packet(pid, [(f, opts) for f in filters], props, self.version))
        ack = self.expect(SUBACK)
        assert ack.packet_id == pid
        return ack

    def unsubscribe(self, *filters) -> Packet:
        pid = self.pid()
        self.send(unsubscribe_packet(pid, list(filters), self.version))
        ack = self.expect(UNSUBACK)
        assert ack.packet_id == pid
        return ack

    def publish(self, topic, payload: bytes = b"", qos: int = 0, retain: bool = False, props=None,
                packet_id: int | None = None, wait: bool = True) -> int | None:
        """Publish; with `wait` completes the QoS 1/2 handshake. Returns the packet id used."""
        pid = (packet_id if packet_id is not None else self.pid()) if qos else None
        self.send(publish_packet(topic, payload, qos, retain, pid, props, version=self.version))
        if wait and qos == 1:
            ack = self.expect(PUBACK)
            assert ack.packet_id == pid
        elif wait and qos == 2:
            rec = self.expect(PUBREC)
            assert rec.packet_id == pid
            self.send(ack_packet(PUBREL, pid, version=self.version))
            comp = self.expect(PUBCOMP)
            assert comp.packet_id == pid
        return pid

    def ack(self, p: Packet) -> None:
        """Acknowledge a received PUBLISH (QoS 1: PUBACK; QoS 2: PUBREC, then PUBREL -> PUBCOMP)."""
        if p.qos == 1:
            self.send(ack_packet(PUBACK, p.packet_id, version=self.version))
        elif p.qos == 2:
            self.send(ack_packet(PUBREC, p.packet_id, version=self.version))
            rel = self.expect(PUBREL)
            assert rel.packet_id == p.packet_id
            self.send(ack_packet(PUBCOMP, p.packet_id, version=self.version))

    def ping(self, timeout: float = 5.0) -> None:
        self.send(PINGREQ_BYTES)
        self.expect(PINGRESP, timeout)

    def disconnect(self, reason_code: int = 0, props=None) -> None:
        self.send(disconnect_packet(reason_code, props, self.version))
        self.close()
