#!/usr/bin/env python3
"""Recovery memory check (issue 13): does a broker that built its state live come back from its
durable logs using no more memory than it held before the restart?

Starts ringmq (fresh temporary --data-dir, loopback ports, --durability periodic, pinned with
`taskset -c 0` when available), builds the state over MQTT 3.1.1 with paho-mqtt:
  - R retained messages on fleet/site{i//1000}/dev{i%1000}/state (32 B JSON payloads), published
    at QoS 0 with retain by a few pipelining clients, each ending with one QoS 1 publish whose
    PUBACK says the broker has read everything before it; checked by subscribing to fleet/site0/#
    and counting the retained messages that arrive;
  - S persistent sessions (clean_session=False, ids device-{s:08}) with N QoS 1 subscriptions each
    (fleet/site{s%997}/dev{s}/cmd/{f}), disconnected afterwards.
Then it reads the broker's VmRSS ("live"), stops it with SIGTERM, starts it again on the same data
directory, times the start until the MQTT port accepts, reads VmRSS again ("restored"), checks that
a session (session present, and its subscription delivers) and a retained message came back, and
prints a report. The ratio restored/live is only reported, never judged. Exits non-zero when the
state could not be built or did not come back. The broker is always killed on exit.

Usage: scripts/recovery-memory.sh [--retained R] [--sessions S] [--subs N] [--shards K] [--bin PATH]
Defaults: 100000 retained, 10000 sessions, 10 subscriptions each, 1 shard, target/release/ringmq.
"""

import argparse
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V2 = mqtt.CallbackAPIVersion.VERSION2


def retained_topic(i):
    return f"fleet/site{i // 1000}/dev{i % 1000}/state"


def retained_payload(i):
    # 32 bytes: {"t":21.5,"n":00000000000000123}
    return b'{"t":%4.1f,"n":%017d}' % (15.0 + (i % 150) / 10.0, i)


def sub_filter(s, f):
    return f"fleet/site{s % 997}/dev{s}/cmd/{f}"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_accepts(port):
    try:
        socket.create_connection((HOST, port), 0.2).close()
        return True
    except OSError:
        return False


def proc_status(pid):
    """VmRSS and VmHWM of pid in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def _die_with_parent():
    # The broker gets SIGKILL if this script dies without running its finally blocks.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Broker:
    def __init__(self, args, work):
        self.args = args
        self.data = os.path.join(work, "data")
        os.makedirs(self.data, mode=0o700, exist_ok=True)
        self.log_path = os.path.join(work, "broker.log")
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.proc = None

    def start(self, label, timeout=300.0):
        """Starts the broker; returns ms until the MQTT port accepts."""
        cmd = []
        if self.args.cpus and shutil.which("taskset"):
            cmd += ["taskset", "-c", self.args.cpus]
        cmd += [
            self.args.bin, "serve",
            "--mqtt-listen", f"{HOST}:{self.mqtt_port}",
            "--http-listen", f"{HOST}:{self.http_port}",
            "--shards", str(self.args.shards),
            "--data-dir", self.data,
            "--durability", "periodic",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"=== {label}: {' '.join(cmd)}\n".encode())
            log.flush()
            started = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         preexec_fn=_die_with_parent)
        deadline = started + timeout
        while not port_accepts(self.mqtt_port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{label}: broker exited with {self.proc.returncode}\n" + self.tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: MQTT port not accepting after {timeout:.0f} s\n" + self.tail())
            time.sleep(0.01)
        return (time.monotonic() - started) * 1000.0

    def rss(self):
        return proc_status(self.proc.pid)

    def stop(self, timeout=120.0):
        """SIGTERM and wait; returns (ms until exit, exit code)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"broker did not exit within {timeout:.0f} s of SIGTERM (killed)")
        self.proc = None
        return (time.monotonic() - started) * 1000.0, code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None

    def tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_lines(self, pattern):
        ansi = re.compile(r"\x1b\[[0-9;]*m")
        out = []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                line = ansi.sub("", line.rstrip("\n"))
                if line.startswith("===") or re.search(pattern, line):
                    out.append(line)
        return out


class Conn:
    """A paho client driven synchronously by the thread that owns it (no loop thread)."""

    def __init__(self, port, client_id, clean_session=True):
        self.port = port
        self.c = mqtt.Client(V2, client_id=client_id, clean_session=clean_session,
                             protocol=mqtt.MQTTv311)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.connack = None
        self.session_present = None
        self.suback = {}
        self.messages = []

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code
        self.session_present = bool(flags.session_present)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.suback[mid] = reason_codes

    def _on_message(self, client, userdata, msg):
        self.messages.append(msg)

    def run_until(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: no answer within {timeout:.0f} s")
            rc = self.c.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"{what}: {mqtt.error_string(rc)}")

    def connect(self, timeout=10.0):
        self.c.connect(HOST, self.port, keepalive=60)
        self.run_until(lambda: self.connack is not None, timeout, "CONNACK")
        if self.connack.is_failure:
            raise ConnectionError(f"CONNECT refused: {self.connack}")
        return self

    def subscribe(self, filters, qos=1, timeout=10.0):
        rc, mid = self.c.subscribe([(f, qos) for f in filters])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"SUBSCRIBE: {mqtt.error_string(rc)}")
        self.run_until(lambda: mid in self.suback, timeout, "SUBACK")
        codes = self.suback[mid]
        if len(codes) != len(filters) or any(code.is_failure for code in codes):
            raise RuntimeError(f"SUBACK refused: {codes}")

    def publish_acked(self, topic, payload, retain=False, timeout=120.0):
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"PUBLISH: {mqtt.error_string(info.rc)}")
        self.run_until(info.is_published, timeout, "PUBACK")

    def collect(self, want, timeout, idle=0.5):
        """Reads messages until `want` arrived (then `idle` s more) or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < want and time.monotonic() < deadline:
            self.c.loop(timeout=0.05)
        quiet = time.monotonic() + idle
        while time.monotonic() < min(quiet, deadline + idle):
            self.c.loop(timeout=0.05)
        return self.messages

    def disconnect(self):
        try:
            self.c.disconnect()
            self.c.loop(timeout=0.01)
        except Exception:
            pass
        try:
            self.c.socket() and self.c.socket().close()
        except Exception:
            pass


def run_threads(n, target, timeout, what):
    errors = []

    def wrap(k):
        try:
            target(k)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"{what} worker {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=wrap, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        errors.append(f"{what}: workers still running after {timeout:.0f} s")
    if errors:
        raise RuntimeError("\n".join(errors[:5]))


def load_retained(port, count, clients, timeout):
    per = -(-count // clients) if count else 0

    def worker(k):
        lo, hi = k * per, min(count, (k + 1) * per)
        conn = Conn(port, f"loader-{k}").connect()
        c = conn.c
        for i in range(lo, hi):
            info = c.publish(retained_topic(i), retained_payload(i), qos=0, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"publish {i}: {mqtt.error_string(info.rc)}")
            if (i & 1023) == 0:
                # Drain what the socket would not take yet (and read anything pending).
                rc = c.loop(timeout=0.0)
                while rc == mqtt.MQTT_ERR_SUCCESS and len(c._out_packet) > 20000:
                    rc = c.loop(timeout=0.05)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    raise ConnectionError(f"loop: {mqtt.error_string(rc)}")
        # Ordered after every QoS 0 publish on this connection: its PUBACK means they were read.
        conn.publish_acked(f"ringmq-bench/sync/{k}", b"", timeout=timeout)
        conn.disconnect()

    run_threads(clients, worker, timeout, "retained")


def load_sessions(port, sessions, subs, workers, timeout):
    def worker(k):
        for s in range(k, sessions, workers):
            conn = Conn(port, f"device-{s:08}", clean_session=False).connect()
            if conn.session_present:
                raise RuntimeError(f"device-{s:08}: session present on a fresh broker")
            if subs:
                conn.subscribe([sub_filter(s, f) for f in range(subs)], qos=1)
            conn.disconnect()

    run_threads(workers, worker, timeout, "sessions")


def count_site0_retained(port, expected, timeout=30.0):
    conn = Conn(port, "check-site0").connect()
    try:
        conn.subscribe(["fleet/site0/#"], qos=0)
        msgs = conn.collect(expected, timeout)
        return sum(1 for m in msgs if m.retain)
    finally:
        conn.disconnect()


def check_retained(port, i, timeout=10.0):
    conn = Conn(port, "check-retained").connect()
    try:
        conn.subscribe([retained_topic(i)], qos=0)
        msgs = conn.collect(1, timeout, idle=0.2)
        return any(m.retain and m.payload == retained_payload(i) for m in msgs)
    finally:
        conn.disconnect()


def check_session(port, s, subs, timeout=10.0):
    """(session_present, a publish to one of its filters reaches it)."""
    dev = Conn(port, f"device-{s:08}", clean_session=False).connect()
    try:
        present = dev.session_present
        delivers = None
        if subs:
            pub = Conn(port, "check-publisher").connect()
            try:
                pub.publish_acked(sub_filter(s, subs - 1), b"ping", timeout=timeout)
            finally:
                pub.disconnect()
            msgs = dev.collect(1, timeout, idle=0.1)
            delivers = any(m.topic == sub_filter(s, subs - 1) and m.payload == b"ping" for m in msgs)
        return present, delivers
    finally:
        dev.disconnect()


def main():
    doc = __doc__.strip()
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                epilog="\n\n".join(doc.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--retained", type=int, default=100000, help="retained messages (default 100000)")
    p.add_argument("--sessions", type=int, default=10000, help="persistent sessions (default 10000)")
    p.add_argument("--subs", type=int, default=10, help="subscriptions per session (default 10)")
    p.add_argument("--shards", type=int, default=1, help="broker --shards (default 1)")
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringmq"),
                   help="ringmq binary (default target/release/ringmq)")
    p.add_argument("--cpus", default="0", help="taskset -c list for the broker ('' = no pinning; default 0)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before each RSS reading (default 3)")
    p.add_argument("--publishers", type=int, default=4, help="retained-loading clients (default 4)")
    p.add_argument("--workers", type=int, default=4, help="session-loading connections (default 4)")
    p.add_argument("--timeout", type=float, default=600.0, help="bound for each loading phase in s (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data and broker.log)")
    args = p.parse_args()
    if min(args.retained, args.sessions, args.subs) < 0 or args.shards < 1:
        p.error("counts must be >= 0 and --shards >= 1")
    if not os.access(args.bin, os.X_OK):
        p.error(f"no executable broker at {args.bin}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    R, S, N = args.retained, args.sessions, args.subs
    items = R + S * N
    work = tempfile.mkdtemp(prefix="ringmq-recovery-memory.")
    broker = Broker(args, work)
    failures = []
    pinned = bool(args.cpus and shutil.which("taskset"))
    if pinned:
        # Keep the loading clients off the broker's cores when there are others.
        try:
            broker_cpus = set()
            for part in args.cpus.split(","):
                a, _, b = part.partition("-")
                broker_cpus.update(range(int(a), int(b or a) + 1))
            rest = os.sched_getaffinity(0) - broker_cpus
            if rest:
                os.sched_setaffinity(0, rest)
        except (ValueError, OSError):
            pass
    try:
        print(f"== {R} retained, {S} sessions x {N} subscriptions, --shards {args.shards}, "
              f"broker {'pinned to cpu ' + args.cpus if pinned else 'not pinned'}", flush=True)
        empty_ms = broker.start("first start (empty data dir)")
        time.sleep(min(args.settle, 1.0))
        empty = broker.rss()

        t = time.monotonic()
        load_retained(broker.mqtt_port, R, max(1, min(args.publishers, R or 1)), args.timeout)
        retained_s = time.monotonic() - t
        want0 = min(R, 1000)
        got0 = count_site0_retained(broker.mqtt_port, want0)
        if got0 != want0:
            failures.append(f"live: fleet/site0/# delivered {got0} retained, expected {want0}")

        t = time.monotonic()
        load_sessions(broker.mqtt_port, S, N, max(1, args.workers), args.timeout)
        sessions_s = time.monotonic() - t
        print(f"loaded: {R} retained in {retained_s:.1f} s (fleet/site0/# gave {got0}/{want0}), "
              f"{S} sessions x {N} subscriptions in {sessions_s:.1f} s", flush=True)

        time.sleep(args.settle)
        live = broker.rss()
        stop_ms, code = broker.stop()
        if code != 0:
            failures.append(f"broker exited with {code} on SIGTERM")

        start_ms = broker.start("restart (same data dir)")
        time.sleep(args.settle)
        restored = broker.rss()

        if R:
            if not check_retained(broker.mqtt_port, R - 1):
                failures.append(f"restored: retained message {retained_topic(R - 1)} missing or different")
        if S:
            s = min(7, S - 1)
            present, delivers = check_session(broker.mqtt_port, s, N)
            if not present:
                failures.append(f"restored: device-{s:08} came back with session present = 0")
            if delivers is False:
                failures.append(f"restored: device-{s:08} got nothing on {sub_filter(s, N - 1)}")

        def per_item(rss):
            return f"{rss / items:.0f} B" if items else "-"

        def marginal(rss):
            return f"{(rss - empty['VmRSS']) / items:.0f} B" if items else "-"

        print(f"empty broker:  RSS {mib(empty['VmRSS'])} (ready in {empty_ms:.0f} ms)")
        print(f"live:          RSS {mib(live['VmRSS'])}, peak {mib(live['VmHWM'])}; "
              f"{per_item(live['VmRSS'])} per retained+subscription ({marginal(live['VmRSS'])} above empty)")
        print(f"restored:      RSS {mib(restored['VmRSS'])}, peak {mib(restored['VmHWM'])}; "
              f"{per_item(restored['VmRSS'])} per retained+subscription ({marginal(restored['VmRSS'])} above empty)")
        print(f"ratio restored/live: {restored['VmRSS'] / live['VmRSS']:.3f} "
              f"(peaks {restored['VmHWM'] / live['VmHWM']:.3f})")
        print(f"SIGTERM to exit: {stop_ms:.0f} ms; restart ready in {start_ms:.0f} ms")
        print("checks: " + ("; ".join(failures) if failures else
                            "retained and session (present, subscription delivers) came back"))
    except Exception as e:  # noqa: BLE001
        failures.append(f"{type(e).__name__}: {e}")
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        broker.kill()
        try:
            lines = broker.log_lines(r"durable state read|state restored|ERROR|WARN|panic")
            if lines:
                print("broker log:")
                for line in lines[-12:]:
                    print("  " + line)
        except OSError:
            pass
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
