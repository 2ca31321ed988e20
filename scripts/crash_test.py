"""Crash test: kill -9 ringmq at random moments under QoS 1 and QoS 2 load, restart it, repeat,
then check with an independent client (paho-mqtt) what survived.

Publishers send sequence numbers (`PUB/SEQ`) at QoS 1 and QoS 2 and note when each was
acknowledged (PUBACK, or PUBCOMP at QoS 2); persistent subscribers (clean start 0, a session
expiry of an hour) note every sequence number they receive, across restarts. After the last
restart the publishers stop, the subscribers drain, and the check runs:

- `sync`: every acknowledged message reached every subscriber;
- `periodic`: every message acknowledged more than one sync interval (plus --slack-ms for
  that interval's write and sync) before the kill that followed it reached every subscriber
  (what came later may be lost: the mode's promise).

Loopback only, bounded by --kills and --run-max; exits 1 if a promise was broken.
Run through scripts/crash-test.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TOPIC = "crash"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    binary: str
    mode: str
    shards: int
    interval_ms: int
    data_dir: str
    log: str
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        config = os.path.join(self.data_dir, "..", "crash.toml")
        with open(config, "w") as f:
            f.write(f"[durability]\nmode = \"{self.mode}\"\nsync_interval_ms = {self.interval_ms}\n")
        cmd = [self.binary, "serve", "--mqtt-listen", f"127.0.0.1:{self.port}",
               "--http-listen", f"127.0.0.1:{self.http_port}", "--shards", str(self.shards),
               "--data-dir", self.data_dir, "--config", config, "--log", "warn"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the broker exited with {self.proc.returncode} at start; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        sys.exit("the broker did not open its port within 30 s")

    def kill(self) -> float:
        assert self.proc is not None
        at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        # io_uring teardown can hold the listening ports for a moment after the process is gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.05)
        return at

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


class Subscriber:
    """A persistent session that notes every (publisher, sequence) it receives. One paho client
    for the whole run, reconnecting by itself after each kill: its own half of the session (a
    QoS 2 message received but not yet released) must survive too."""

    def __init__(self, name: str, qos: int):
        self.name, self.qos = name, qos
        self.seen: set[tuple[str, int]] = set()
        self.ready = threading.Event()
        self.client: mqtt.Client | None = None

    def connect(self, port: int) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.name,
                        protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600

        def on_message(_c, _u, m):
            pub, seq = m.payload.decode().split("/")
            self.seen.add((pub, int(seq)))

        def on_connect(client, _u, flags, reason, _p):
            if reason != 0:
                return
            if flags.session_present:
                self.ready.set()
            else:
                client.subscribe(f"{TOPIC}/#", qos=self.qos)

        c.on_message = on_message
        c.on_connect = on_connect
        c.on_subscribe = lambda *_a: self.ready.set()
        c.on_disconnect = lambda *_a: self.ready.clear()
        c.connect("127.0.0.1", port, keepalive=30, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                  properties=props)
        c.loop_start()
        self.client = c
        self.wait()

    def wait(self) -> None:
        if not self.ready.wait(15):
            sys.exit(f"{self.name}: not connected (or its session lost) within 15 s")

    def close(self) -> None:
        if self.client:
            self.client.disconnect()
            self.client.loop_stop()


class Publisher:
    """Publishes PUB/SEQ at one QoS as fast as its window allows; notes acknowledgements."""

    def __init__(self, name: str, qos: int):
        self.name, self.qos = name, qos
        self.next = 0
        # Sequence number -> (when acknowledged, the run it was published in).
        self.acked: dict[int, tuple[float, int]] = {}
        self.run = -1
        self.stop = threading.Event()
        self.settle = None
        self.thread: threading.Thread | None = None
        self.client: mqtt.Client | None = None

    def start(self, port: int) -> None:
        self.run += 1
        run_index = self.run
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{self.name}-{self.next}",
                        protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(20)
        c.max_queued_messages_set(20)
        pending: dict[int, int] = {}
        # Acknowledgements as paho reports them (its network thread), matched to sequence
        # numbers by the publishing thread, which names each mid in `pending` before it looks.
        acks: queue.SimpleQueue = queue.SimpleQueue()

        def on_publish(_c, _u, mid, reason, _p):
            acks.put((mid, time.monotonic(), reason.is_failure))

        def settle():
            while True:
                try:
                    mid, at, failed = acks.get_nowait()
                except queue.Empty:
                    return
                seq = pending.pop(mid, None)
                if seq is not None and not failed:
                    self.acked[seq] = (at, run_index)

        c.on_publish = on_publish
        c.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        c.loop_start()
        self.client, self.stop, self.settle = c, threading.Event(), settle

        def run():
            while not self.stop.is_set():
                seq = self.next
                info = c.publish(TOPIC + "/" + self.name, f"{self.name}/{seq}", qos=self.qos)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.next += 1
                    pending[info.mid] = seq
                settle()
                if info.rc != mqtt.MQTT_ERR_SUCCESS or len(pending) >= 20:
                    time.sleep(0.002)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(5)
        if self.client:
            self.client.loop_stop()
            self.client.socket() and self.client.socket().close()
        if self.settle:
            self.settle()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--mode", choices=["sync", "periodic"], default="sync")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--interval-ms", type=int, default=200)
    p.add_argument("--slack-ms", type=int, default=250,
                   help="periodic: beyond one interval, how much before a kill may be lost "
                        "(the interval's write and sync, a late timer)")
    p.add_argument("--run-max", type=float, default=1.5, help="longest run between kills (s)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="ringmq-crash.")
    data = os.path.join(work, "data")
    os.makedirs(data)
    broker = Broker(args.binary, args.mode, args.shards, args.interval_ms, data,
                    os.path.join(work, "broker.log"))
    subs = [Subscriber(f"crash-sub-{q}-{i}", q) for q in (1, 2) for i in range(2)]
    pubs = [Publisher(f"p{q}x{i}", q) for q in (1, 2) for i in range(2)]
    kills: list[float] = []
    broker.start()
    try:
        for s in subs:
            s.connect(broker.port)
        for k in range(args.kills):
            for pub in pubs:
                pub.start(broker.port)
            time.sleep(rng.uniform(0.2, args.run_max))
            kills.append(broker.kill())
            for pub in pubs:
                pub.halt()
            deadline = time.monotonic() + 5
            while any(s.ready.is_set() for s in subs) and time.monotonic() < deadline:
                time.sleep(0.01)
            broker.start()
            time.sleep(0.1)
            for s in subs:
                s.wait()
        # Drain: every subscriber gets what its session holds.
        deadline = time.monotonic() + 30
        want = {(pub.name, seq) for pub in pubs for seq in pub.acked}
        while time.monotonic() < deadline:
            if all(want <= s.seen for s in subs):
                break
            time.sleep(0.2)
        for s in subs:
            s.close()
        broker.stop()
    finally:
        if broker.proc and broker.proc.poll() is None:
            broker.proc.kill()

    # `periodic` writes and syncs what an interval recorded when its timer fires: what it may
    # lose is the interval plus that write and sync, and a timer that fires late on a loaded
    # host (seen once with both cores busy: the suite's run failed by a message acknowledged
    # just over one interval before the kill).
    grace = (args.interval_ms + args.slack_ms) / 1000 if args.mode == "periodic" else 0.0
    acked = 0
    oldest = 0.0
    missing: list[tuple[str, str, int]] = []
    for pub in pubs:
        for seq, (at, run) in pub.acked.items():
            # The kill that ended the run it was published in (an acknowledgement read after
            # the kill was sent before it). In periodic mode what was acknowledged within one
            # interval before that kill may be lost.
            following = kills[run] if run < len(kills) else None
            if args.mode == "periodic" and following is not None and following - at < grace:
                continue
            acked += 1
            for s in subs:
                if (pub.name, seq) not in s.seen:
                    missing.append((s.name, pub.name, seq))
                    if following is not None:
                        oldest = max(oldest, following - at)
    by_pair: dict[str, list[int]] = {}
    for sub, pub, seq in missing:
        by_pair.setdefault(f"{sub}<-{pub}", []).append(seq)
    summary = {k: (len(v), min(v), max(v)) for k, v in sorted(by_pair.items())}
    report = {
        "mode": args.mode, "kills": len(kills), "shards": args.shards, "seed": seed,
        "acknowledged": sum(len(p.acked) for p in pubs), "checked": acked,
        "subscribers": len(subs), "missing": len(missing),
        "oldest_missing_ms": round(oldest * 1000), "missing_by_pair": summary,
        "log": broker.log,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.mode}: {len(kills)} kills on {args.shards} shards (seed {seed}): "
              f"{report['acknowledged']} acknowledged, {acked} checked x {len(subs)} subscribers, "
              f"{len(missing)} missing (acknowledged at most {oldest * 1000:.0f} ms before "
              f"their kill)")
        for pair, (n, low, high) in summary.items():
            print(f"  {pair}: {n} missing, sequence numbers {low}..{high}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
