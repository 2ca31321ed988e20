"""MQTT over TLS (`tls=True`, `ca_file=`) and the API over HTTPS (`verify=`)."""

from __future__ import annotations

import queue
import ssl
from pathlib import Path

import pytest

from conftest import PASSWORD, Broker, unique, wait_for
from ringmq import Payload, RingmqApi, RingmqClient, RingmqConnectionError, RingmqError


def test_mqtt_and_api_over_tls(tls_broker: tuple[Broker, Path]) -> None:
    b, ca = tls_broker
    base = unique("tls")
    got: queue.Queue[Payload] = queue.Queue()
    with RingmqApi(url=b.https_url, key=b.root_key, verify=str(ca)) as api:
        assert api.org.get().id == "default"
        with RingmqClient(host="127.0.0.1", port=b.mqtts_port, username="tester", password=PASSWORD,
                          tls=True, ca_file=str(ca)) as c:
            c.add_handler(f"{base}/#", lambda t, p: got.put(p), qos=1)
            wait_for(lambda: api.sessions.get(c.client_id).subscriptions, what="subscription")
            api.publish(f"{base}/a", {"secure": True}, qos=1)
            assert got.get(timeout=5) == {"secure": True}
    ctx = ssl.create_default_context(cafile=str(ca))
    with RingmqApi(url=b.https_url, key=b.root_key, verify=ctx) as api:
        assert api.users.get("tester").username == "tester"


def test_tls_without_the_ca_fails(tls_broker: tuple[Broker, Path]) -> None:
    b, _ = tls_broker
    with pytest.raises(RingmqConnectionError):
        RingmqClient(host="127.0.0.1", port=b.mqtts_port, username="tester", password=PASSWORD,
                     tls=True, connect_timeout=5).connect()
    with RingmqApi(url=b.https_url, key=b.root_key) as api, pytest.raises(RingmqError) as ei:
        api.org.get()
    assert ei.value.error == "transport_error"
