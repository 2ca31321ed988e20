"""MQTT over WebSocket (`GET /mqtt`, subprotocol `mqtt`) on the HTTP port: paho-mqtt with its
websockets transport talking to a TCP client on the other shard, and hostile WebSocket input."""

from __future__ import annotations

import queue
import socket
import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from helpers import unique

pytestmark = pytest.mark.ringmq_only


def ws_client(broker, version=mqtt.MQTTv5):
    got: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("ws"), protocol=version, transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.on_connect = lambda cl, ud, flags, rc, props: connected.put(rc.value if hasattr(rc, "value") else rc)
    c.on_message = lambda cl, ud, m: got.put((m.topic, bytes(m.payload), m.qos))
    c.connect(broker.host, broker.http_port, 30)
    c.loop_start()
    assert connected.get(timeout=5) == 0
    return c, got


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_paho_over_websocket_talks_to_tcp_clients(broker, connect, version):
    c, got = ws_client(broker, version)
    sub_mid = c.subscribe("wsx/#", qos=1)[1]
    assert sub_mid
    tcp = connect()
    import time
    time.sleep(0.3)
    for i in range(3):
        tcp.publish("wsx/t", b"m%d" % i, qos=1)
    assert [got.get(timeout=5)[1] for _ in range(3)] == [b"m0", b"m1", b"m2"]
    tcp.subscribe("back/#", qos=1)
    info = c.publish("back/1", b"from-ws", qos=1)
    info.wait_for_publish(5)
    assert tcp.get().payload == b"from-ws"
    c.disconnect()
    c.loop_stop()


def upgrade(broker) -> socket.socket:
    s = socket.create_connection((broker.host, broker.http_port), timeout=5)
    s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1024)
    assert head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: mqtt" in head
    return s


def masked(opcode: int, payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


def test_text_frames_and_unmasked_frames_close_the_connection(broker):
    s = upgrade(broker)
    s.sendall(masked(0x1, b"not binary"))
    data = s.recv(64)
    assert data[:1] == b"\x88", "a close frame"
    assert struct.unpack(">H", data[2:4])[0] == 1002
    s.close()
    s = upgrade(broker)
    s.sendall(bytes([0x82, 2]) + b"\x10\x00")  # unmasked binary frame
    data = s.recv(64)
    assert data[:1] == b"\x88"
    s.close()


def test_connect_split_across_frames_and_ping_answered(broker):
    s = upgrade(broker)
    connect_packet = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 1]) + b"c"
    s.sendall(masked(0x2, connect_packet[:5]) + masked(0x2, connect_packet[5:]))
    data = s.recv(64)
    assert data[:2] == b"\x82\x04" and data[2:4] == b"\x20\x02", data
    s.sendall(masked(0x9, b"hi"))  # WebSocket ping
    s.sendall(masked(0x2, b"\xc0\x00"))  # MQTT PINGREQ, so the writer runs
    data = b""
    while b"\x8a\x02hi" not in data:
        data += s.recv(64)
    s.close()
