#!/usr/bin/env python3
"""PUBACK latency of one paho-mqtt QoS 1 publisher at a light pace, with one persistent
subscriber that acknowledges at once ("online"), is offline ("offline"), or acknowledges 20 ms
late ("slow"). Measures what `sync` durability's consume grace (durability.consume_grace_us)
buys and costs (README, Durability).

Usage: scripts/puback_latency.py PORT {online,offline,slow} [--count N]
Start the broker first, e.g.
  ringmq serve --mqtt-listen 127.0.0.1:PORT --durability sync --data-dir DIR
(add `--config` with `[durability] consume_grace_us = 0` to compare). Loopback only; bounded by
--count (default 300, one publish every 3 ms). Needs paho-mqtt (scripts/install-test-deps.sh).
"""

import argparse
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("mode", choices=["online", "offline", "slow"])
    parser.add_argument("--count", type=int, default=300, help="publishes (1 to 100000)")
    args = parser.parse_args()
    if not 1 <= args.count <= 100_000:
        parser.error("--count must be between 1 and 100000")

    slow = args.mode == "slow"
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="puback-latency-sub",
                      protocol=mqtt.MQTTv311, clean_session=False, manual_ack=slow)

    def on_message(client, userdata, message):
        if slow:
            threading.Timer(0.02, lambda: client.ack(message.mid, message.qos)).start()

    sub.on_message = on_message
    sub.connect("127.0.0.1", args.port)
    sub.loop_start()
    sub.subscribe("puback-latency/#", qos=1)
    time.sleep(0.5)
    if args.mode == "offline":
        sub.disconnect()
        sub.loop_stop()
        time.sleep(0.3)

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="puback-latency-pub", protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", args.port)
    pub.loop_start()
    time.sleep(0.3)
    latencies = []
    for _ in range(args.count):
        started = time.perf_counter()
        info = pub.publish("puback-latency/x", b"x" * 64, qos=1)
        info.wait_for_publish(5)
        latencies.append((time.perf_counter() - started) * 1e6)
        time.sleep(0.003)
    latencies.sort()

    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    print(f"{args.mode}: PUBACK p50 {at(0.5):.0f} us, p90 {at(0.9):.0f} us, p99 {at(0.99):.0f} us "
          f"({len(latencies)} publishes)")
    pub.disconnect()
    pub.loop_stop()
    if args.mode != "offline":
        sub.disconnect()
        sub.loop_stop()


if __name__ == "__main__":
    main()
