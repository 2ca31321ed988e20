"""Operations endpoints over HTTP (httpx): /healthz, /readyz through the mesh, /metrics in
Prometheus text format."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.ringmq_only


def http(broker) -> httpx.Client:
    return httpx.Client(base_url=f"http://{broker.host}:{broker.http_port}", timeout=10)


def test_healthz_and_readyz(broker):
    with http(broker) as c:
        assert c.get("/healthz").text == "ok\n"
        r = c.get("/readyz")
        assert r.status_code == 200 and r.text == "ready\n"
        assert c.post("/readyz").status_code == 405


def test_metrics_count_messages_per_shard(broker, connect):
    sub = connect()
    sub.subscribe("m/#", qos=1)
    pub = connect()
    for i in range(3):
        pub.publish("m/x", b"%d" % i, qos=1)
    sub.get_n(3)
    with http(broker) as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    received = sum(v for k, v in samples.items() if k.startswith("ringmq_messages_received_total{"))
    sent = sum(v for k, v in samples.items() if k.startswith("ringmq_messages_sent_total{"))
    assert received == 3 and sent == 3
    assert samples['ringmq_connections{shard="0"}'] + samples['ringmq_connections{shard="1"}'] == 2
    assert 'ringmq_rest_publishes_total{status="202"}' in samples


def test_log_written_to_a_file_has_no_colour_codes(broker):
    # The fixture sends the broker's stderr to a file: log lines there must be plain text
    # (regression: ANSI colour codes were written whatever the output).
    with http(broker) as c:
        assert c.get("/healthz").status_code == 200
    text = broker.log_path.read_bytes()
    assert b"INFO" in text or b"WARN" in text, text[-500:]
    assert b"\x1b[" not in text


def raw_http(broker, request: bytes, timeout: float = 5.0) -> bytes:
    import socket

    with socket.create_connection((broker.host, broker.http_port), timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                head, _, body = answer.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:") and len(body) >= int(line.split(b":")[1]):
                        return answer
    return answer


def json_error_of(answer: bytes, status: int) -> dict:
    import json

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), answer[:300]
    assert b"content-type: application/json" in head.lower(), head
    value = json.loads(body)
    assert set(value) == {"error", "detail"} and value["detail"], value
    return value


def test_http_layer_errors_are_json(broker):
    # 400: not HTTP at all.
    assert json_error_of(raw_http(broker, b"HELLO\r\n\r\n"), 400)["error"] == "bad_request"
    # 431: a head past the bound.
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17_000 + b"\r\n\r\n"
    assert json_error_of(raw_http(broker, big), 431)["error"] == "headers_too_large"
    # 413: a management body past 64 KiB (docs/api.md), refused from its Content-Length.
    key = (broker.data_dir / "bootstrap-key").read_text().strip()
    over = (b"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (64 * 1024 + 1))
    assert json_error_of(raw_http(broker, over), 413)["error"] == "payload_too_large"
    # A failed WebSocket upgrade: no Upgrade header, and an unsupported version.
    no_upgrade = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    value = json_error_of(raw_http(broker, no_upgrade), 426)
    assert value["error"] == "upgrade_required"
    old = (b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    answer = raw_http(broker, old)
    assert b"Sec-WebSocket-Version: 13" in answer
    json_error_of(answer, 400 if answer.startswith(b"HTTP/1.1 400") else 426)
    # 405 on an operations route.
    assert json_error_of(raw_http(broker, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
                         405)["error"] == "method_not_allowed"
