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
