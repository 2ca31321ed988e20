"""Graceful shutdown: SIGTERM/SIGINT send v5 clients DISCONNECT 0x8B, flush what was already routed,
and exit 0; a restart on the same ports works."""

import signal
import time

import pytest

import mqttraw as mr
from helpers import is_ringmq, unique


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_sends_0x8b_and_exits_0(broker, raw, connect, sig):
    v5 = raw(5)
    v5.connect(unique("sd5"))
    v3 = raw(4)
    v3.connect(unique("sd3"))
    paho = connect()  # on the other shard from v3
    t0 = time.monotonic()
    broker.signal(sig)
    got = v5.expect_closed(10)
    v3.expect_closed(10)
    paho.wait_disconnected(10)
    if is_ringmq():  # mosquitto 2.0.11 just closes its sockets
        assert got and got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x8B, got  # Server shutting down
        assert paho.disconnect_rc == 0x8B
    rc = broker.proc.wait(10)
    assert rc == 0, f"exit code {rc}:\n{broker.log_tail()}"
    assert time.monotonic() - t0 < 10


def test_shutdown_flushes_routed_messages(broker, raw, connect):
    sub = raw(5)
    sub.connect(unique("flush"))
    sub.subscribe("flush/t", qos=0)
    pub = connect()
    n = 200
    for i in range(n):
        pub.publish("flush/t", b"%04d" % i, qos=0)
    pub.publish("flush/t", b"last", qos=1)  # acknowledged: everything before it has been routed
    time.sleep(0.2)
    broker.signal(signal.SIGTERM)
    got = sub.expect_closed(10)
    payloads = [p.payload for p in got if p.type == mr.PUBLISH]
    assert payloads == [b"%04d" % i for i in range(n)] + [b"last"], f"{len(payloads)} of {n + 1} flushed"
    if is_ringmq():
        assert got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x8B
    assert broker.proc.wait(10) == 0


def test_restart_on_same_ports(broker, connect, raw):
    c = raw(5)
    c.connect(unique("before"))
    broker.restart()
    c.expect_closed(5)
    sub = connect()
    sub.subscribe("again/t", qos=1)
    connect().publish("again/t", b"back", qos=1)
    assert sub.get().payload == b"back"


def test_a_closed_log_pipe_neither_stops_the_shards_nor_the_shutdown(tmp_path):
    """Regression: with stderr a pipe its reader closed, the log subscriber reported the failed
    write with `eprintln!`, which panicked on the same pipe and killed the shard threads before
    they were ready; the broker then served nothing and ignored SIGTERM, waiting for them."""
    import os
    import subprocess

    from conftest import BROKER_KIND, ROOT, free_port

    if BROKER_KIND != "ringmq":
        pytest.skip("ringmq's logging")
    binary = os.environ.get("RINGMQ_BIN") or str(ROOT / "target" / "debug" / "ringmq")
    mqtt_port, http_port = free_port(), free_port()
    read_end, write_end = os.pipe()
    os.close(read_end)  # every log line now meets EPIPE
    proc = subprocess.Popen([binary, "serve", "--mqtt-listen", f"127.0.0.1:{mqtt_port}",
                             "--http-listen", f"127.0.0.1:{http_port}", "--data-dir", str(tmp_path),
                             "--log", "debug"],
                            stdout=subprocess.DEVNULL, stderr=write_end, stdin=subprocess.DEVNULL)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = mr.RawClient("127.0.0.1", mqtt_port, 5)
            except OSError:
                assert proc.poll() is None, f"the broker exited with {proc.returncode}"
                assert time.monotonic() < deadline, "the shards never served"
                time.sleep(0.1)
                continue
            try:
                c.connect(unique("pipe"))
                break
            finally:
                c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
