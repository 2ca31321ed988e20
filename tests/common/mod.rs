//! Harness for the rumqttc integration tests: a `ringmq serve` child process on free loopback ports
//! (`--shards 2 --placement round-robin`, so consecutive connections land on different shards) and
//! a small client wrapper over rumqttc's MQTT 3.1.1 and 5.0 event loops. Every wait is bounded.
//!
//! The broker is stopped with SIGTERM when the `Broker` is dropped; `Broker::stop` also checks the
//! exit status.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(5);

static BROKER_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A loopback port nothing listens on, never the same twice in this process. The tests of a
/// binary run in parallel, each starting a broker: the kernel may hand a just-closed port out
/// again, and two brokers on one port share it (SO_REUSEPORT), so one test's client would meet
/// the other's broker (seen once in CI as a CONNECT reset by a broker shutting down).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .expect("local_addr")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `ringmq serve`.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with_config("")
    }

    /// `config` is a TOML overlay passed with `--config` (empty: none).
    pub fn start_with_config(config: &str) -> Broker {
        let n = BROKER_COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ringmq-rstest-{}-{}", std::process::id(), n));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("create test dir");
        let port = free_port();
        let http_port = free_port();
        if !config.is_empty() {
            std::fs::write(dir.join("config.toml"), config).expect("write config");
        }
        let mut broker = Broker {
            child: None,
            port,
            http_port,
            dir,
        };
        broker.spawn();
        broker
    }

    /// SIGTERM (asserting a clean exit), then the same broker again: same ports, data and
    /// configuration.
    pub fn restart(&mut self) {
        let status = self.stop().expect("stopped within 10 s");
        assert!(status.success(), "exit {status}:\n{}", self.log_tail());
        self.spawn();
    }

    /// SIGKILL (a crash: no flush, no clean stop), wait for the process, then the same broker
    /// again: same ports, data and configuration, as `restart` apart from the signal. After a
    /// kill the kernel tears the shards' io_uring instances down asynchronously, and their
    /// pending accepts hold the listening ports a moment after the process is reaped (a start
    /// then fails with EADDRINUSE), so this waits up to 10 s until both ports can be bound.
    /// Returns once the new broker answers a CONNECT (`wait_connack`).
    pub fn kill_and_restart(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().expect("broker running");
        child.kill().expect("SIGKILL ringmq");
        let status = child.wait().expect("wait for the killed ringmq");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "ringmq ended otherwise than by SIGKILL ({status}):\n{}",
            self.log_tail()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.port, self.http_port] {
            // std binds with SO_REUSEADDR, as the broker's own probe does.
            while TcpListener::bind(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "port {port} still bound 10 s after the kill"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.spawn();
        self.wait_connack();
    }

    /// Waits (up to 10 s) until an MQTT 3.1.1 CONNECT (clean session, its own client id) gets
    /// CONNACK 0. `spawn`'s readiness check is a TCP connect, which can succeed against the
    /// broker's start-up probe of its own ports (a bind and listen of a moment, before the
    /// durable state is read) and return before the real listener is open; the next CONNECT
    /// is then refused or reset.
    pub fn wait_connack(&self) {
        use std::io::{Read, Write};
        let id = unique("ready");
        let mut connect = vec![0x10, (12 + id.len()) as u8, 0, 4];
        connect.extend_from_slice(b"MQTT");
        connect.extend_from_slice(&[4, 0x02, 0, 10, 0, id.len() as u8]);
        connect.extend_from_slice(id.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                stream.write_all(&connect)?;
                let mut connack = [0u8; 4];
                stream.read_exact(&mut connack)?;
                let _ = stream.write_all(&[0xE0, 0]);
                Ok(connack)
            });
            match answer {
                Ok([0x20, 2, _, 0]) => return,
                Ok(other) => panic!("ready check: CONNACK {other:?}:\n{}", self.log_tail()),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!(
                    "ready check: no CONNACK within 10 s ({e}):\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    fn spawn(&mut self) {
        let (dir, port, http_port) = (self.dir.clone(), self.port, self.http_port);
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        command
            .arg("serve")
            .arg("--mqtt-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--shards")
            .arg("2")
            .arg("--placement")
            .arg("round-robin")
            .arg("--data-dir")
            .arg(dir.join("data"));
        let path = dir.join("config.toml");
        if path.exists() {
            command.arg("--config").arg(path);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .expect("open log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn ringmq");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ringmq exited at start ({status}):\n{}", self.log_tail());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "ringmq did not accept on {} within 10s:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then wait up to 10 s; returns the exit status (kills the child on timeout).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: `pid` is our own child, which has not been reaped yet (we hold its `Child`).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_none() {
            // Already stopped (and checked) by the test.
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        let status = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            match status {
                Some(s) if s.success() => {}
                other => panic!("ringmq did not exit 0 on SIGTERM within 10s: {other:?}"),
            }
        }
    }
}

/// MQTT protocol version of a test client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// A received application message.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// The DUP flag (a redelivery).
    pub dup: bool,
    /// The packet identifier (0 at QoS 0).
    pub pkid: u16,
}

#[derive(Debug)]
enum Ev {
    ConnAck { session_present: bool, code: u8 },
    SubAck(Vec<u8>),
    Publish(Msg),
    Acked,
    Disconnect(u8),
    OutgoingDisconnect,
    Closed(String),
}

enum Handle {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Options for `Client::connect`.
#[derive(Clone, Debug)]
pub struct Opts {
    pub version: Version,
    pub client_id: String,
    /// v3.1.1 clean session / v5 clean start.
    pub clean: bool,
    /// v5 only: Session Expiry Interval in seconds.
    pub session_expiry: Option<u32>,
    /// (topic, payload, qos)
    pub will: Option<(String, Vec<u8>, u8)>,
    /// (username, password)
    pub credentials: Option<(String, String)>,
    /// rumqttc's manual acks: incoming QoS 1/2 PUBLISHes are never acknowledged (no PUBACK or
    /// PUBREC), so they stay in flight at the broker.
    pub manual_acks: bool,
}

impl Opts {
    pub fn new(version: Version, client_id: &str) -> Opts {
        Opts {
            version,
            client_id: client_id.to_string(),
            clean: true,
            session_expiry: None,
            will: None,
            credentials: None,
            manual_acks: false,
        }
    }

    pub fn login(mut self, username: &str, password: &str) -> Opts {
        self.credentials = Some((username.to_string(), password.to_string()));
        self
    }

    /// A session that outlives the connection (v3.1.1 clean session 0; v5 clean start 0 + expiry 60 s).
    pub fn persistent(mut self) -> Opts {
        self.clean = false;
        if self.version == Version::V5 {
            self.session_expiry = Some(60);
        }
        self
    }

    /// Never acknowledge incoming QoS 1/2 messages (see `manual_acks`).
    pub fn unacking(mut self) -> Opts {
        self.manual_acks = true;
        self
    }

    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8) -> Opts {
        self.will = Some((topic.to_string(), payload.to_vec(), qos));
        self
    }
}

fn qos3(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A connected rumqttc client whose event loop runs in a task and never reconnects by itself.
pub struct Client {
    handle: Handle,
    events: mpsc::Receiver<Ev>,
    pending: VecDeque<Msg>,
    task: Option<JoinHandle<()>>,
    pub session_present: bool,
    pub closed: Option<String>,
    pub disconnect_reason: Option<u8>,
}

impl Client {
    pub async fn connect(broker: &Broker, opts: Opts) -> Client {
        match Client::try_connect(broker, opts).await {
            Ok(client) => client,
            Err(why) => panic!("{why}"),
        }
    }

    /// Like `connect`, but a refused or failed CONNECT is an `Err` with what happened.
    pub async fn try_connect(broker: &Broker, opts: Opts) -> Result<Client, String> {
        let (tx, events) = mpsc::channel();
        let (handle, task) = match opts.version {
            Version::V311 => {
                let mut o = rumqttc::MqttOptions::new(&opts.client_id, "127.0.0.1", broker.port);
                o.set_keep_alive(Duration::from_secs(30));
                o.set_clean_session(opts.clean);
                o.set_manual_acks(opts.manual_acks);
                if let Some((username, password)) = &opts.credentials {
                    o.set_credentials(username, password);
                }
                if let Some((topic, payload, qos)) = &opts.will {
                    o.set_last_will(rumqttc::LastWill::new(
                        topic,
                        payload.clone(),
                        qos3(*qos),
                        false,
                    ));
                }
                let (client, eventloop) = rumqttc::AsyncClient::new(o, 1024);
                (Handle::V3(client), tokio::spawn(run_v3(eventloop, tx)))
            }
            Version::V5 => {
                let mut o =
                    rumqttc::v5::MqttOptions::new(&opts.client_id, "127.0.0.1", broker.port);
                o.set_keep_alive(Duration::from_secs(30));
                o.set_clean_start(opts.clean);
                o.set_manual_acks(opts.manual_acks);
                if let Some((username, password)) = &opts.credentials {
                    o.set_credentials(username, password);
                }
                let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
                props.session_expiry_interval = opts.session_expiry;
                o.set_connect_properties(props);
                if let Some((topic, payload, qos)) = &opts.will {
                    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                        topic,
                        payload.clone(),
                        qos5(*qos),
                        false,
                        None,
                    ));
                }
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(o, 1024);
                (Handle::V5(client), tokio::spawn(run_v5(eventloop, tx)))
            }
        };
        let mut c = Client {
            handle,
            events,
            pending: VecDeque::new(),
            task: Some(task),
            session_present: false,
            closed: None,
            disconnect_reason: None,
        };
        match c.next_event(WAIT).await {
            Some(Ev::ConnAck {
                session_present,
                code,
            }) => {
                if code != 0 {
                    return Err(format!("{}: CONNACK refused ({code:#x})", opts.client_id));
                }
                c.session_present = session_present;
            }
            other => {
                return Err(format!(
                    "{}: expected CONNACK, got {other:?}",
                    opts.client_id
                ))
            }
        }
        Ok(c)
    }

    /// The next event from the event-loop task, or None after `wait`. (The dev-dependency tokio
    /// has no `sync` feature, so this polls a std channel; 2 ms steps are plenty for tests.)
    async fn next_event(&mut self, wait: Duration) -> Option<Ev> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.events.try_recv() {
                Ok(ev) => {
                    match &ev {
                        Ev::Closed(why) => self.closed = Some(why.clone()),
                        Ev::Disconnect(code) => self.disconnect_reason = Some(*code),
                        _ => {}
                    }
                    return Some(ev);
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    if self.closed.is_none() {
                        self.closed = Some("event loop ended".into());
                    }
                    return Some(Ev::Closed("event loop ended".into()));
                }
                Err(mpsc::TryRecvError::Empty) => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }

    /// Waits for an event other than a PUBLISH (publishes are kept for `recv`).
    async fn wait_for<F: Fn(&Ev) -> bool>(&mut self, what: &str, pred: F) -> Ev {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Ev::Publish(m)) => self.pending.push_back(m),
                Some(ev) if pred(&ev) => return ev,
                Some(Ev::Closed(why)) => {
                    panic!("connection closed while waiting for {what}: {why}")
                }
                Some(_) => {}
                None => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// SUBSCRIBE and wait for the SUBACK; returns the granted QoS / reason code.
    /// SUBSCRIBE that may be refused: rumqttc's v5 event loop ends the connection on a failure
    /// reason code, which comes back as `Err` with rumqttc's account of it.
    pub async fn try_subscribe(&mut self, filter: &str, qos: u8) -> Result<u8, String> {
        match &self.handle {
            Handle::V3(c) => c.subscribe(filter, qos3(qos)).await.expect("subscribe"),
            Handle::V5(c) => c.subscribe(filter, qos5(qos)).await.expect("subscribe"),
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Ev::Publish(m)) => self.pending.push_back(m),
                Some(Ev::SubAck(codes)) => return Ok(codes[0]),
                Some(Ev::Closed(why)) => return Err(why),
                Some(_) => {}
                None => panic!("no SUBACK within {WAIT:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> u8 {
        match &self.handle {
            Handle::V3(c) => c.subscribe(filter, qos3(qos)).await.expect("subscribe"),
            Handle::V5(c) => c.subscribe(filter, qos5(qos)).await.expect("subscribe"),
        }
        match self
            .wait_for("SUBACK", |e| matches!(e, Ev::SubAck(_)))
            .await
        {
            Ev::SubAck(codes) => codes[0],
            _ => unreachable!(),
        }
    }

    /// PUBLISH; for QoS 1/2 waits for PUBACK/PUBCOMP.
    pub async fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
        self.publish_nowait(topic, qos, retain, payload).await;
        if qos > 0 {
            self.wait_for("PUBACK/PUBCOMP", |e| matches!(e, Ev::Acked))
                .await;
        }
    }

    pub async fn publish_nowait(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
        match &self.handle {
            Handle::V3(c) => c
                .publish(topic, qos3(qos), retain, payload.to_vec())
                .await
                .expect("publish"),
            Handle::V5(c) => c
                .publish(topic, qos5(qos), retain, payload.to_vec())
                .await
                .expect("publish"),
        }
    }

    /// Waits for `n` acknowledgements of earlier `publish_nowait` calls.
    pub async fn wait_acks(&mut self, n: usize) {
        for _ in 0..n {
            self.wait_for("PUBACK/PUBCOMP", |e| matches!(e, Ev::Acked))
                .await;
        }
    }

    /// The next application message within `wait`, if one comes.
    pub async fn next_message(&mut self, wait: Duration) -> Option<Msg> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.next_event(left).await {
                Some(Ev::Publish(m)) => return Some(m),
                Some(Ev::Closed(why)) => panic!("connection closed while waiting: {why}"),
                Some(_) => {}
                None => return None,
            }
        }
    }

    /// The next application message (panics after `WAIT`).
    pub async fn recv(&mut self) -> Msg {
        if let Some(m) = self.pending.pop_front() {
            return m;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Ev::Publish(m)) => return m,
                Some(Ev::Closed(why)) => {
                    panic!("connection closed while waiting for a message: {why}")
                }
                Some(_) => {}
                None => panic!("no message within {WAIT:?}"),
            }
        }
    }

    /// Asserts that no application message arrives within `wait`.
    pub async fn expect_none(&mut self, wait: Duration) {
        if let Some(m) = self.pending.pop_front() {
            panic!("unexpected message {m:?}");
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_event(left).await {
                Some(Ev::Publish(m)) => panic!("unexpected message {m:?}"),
                Some(_) => {}
                None => return,
            }
        }
    }

    /// Waits until the broker closes this connection; returns the v5 DISCONNECT reason code if one came.
    pub async fn wait_closed(&mut self) -> Option<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Ev::Publish(m)) => self.pending.push_back(m),
                Some(_) => {}
                None => panic!("connection still open after {WAIT:?}"),
            }
        }
        self.disconnect_reason
    }

    /// A normal DISCONNECT.
    pub async fn disconnect(mut self) {
        match &self.handle {
            Handle::V3(c) => c.disconnect().await.expect("disconnect"),
            Handle::V5(c) => c.disconnect().await.expect("disconnect"),
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Ev::OutgoingDisconnect) | Some(Ev::Closed(_)) | None => break,
                Some(_) => {}
            }
        }
        // Give the DISCONNECT a moment on the wire before the socket is dropped.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.stop_task().await;
    }

    async fn stop_task(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Drops the TCP connection without DISCONNECT (fires the will).
    pub async fn drop_connection(mut self) {
        self.stop_task().await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run_v3(mut eventloop: rumqttc::EventLoop, tx: mpsc::Sender<Ev>) {
    use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
    loop {
        let ev = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(a))) => Ev::ConnAck {
                session_present: a.session_present,
                code: a.code as u8,
            },
            Ok(Event::Incoming(Packet::SubAck(a))) => Ev::SubAck(
                a.return_codes
                    .iter()
                    .map(|c| match c {
                        SubscribeReasonCode::Success(q) => *q as u8,
                        SubscribeReasonCode::Failure => 0x80,
                    })
                    .collect(),
            ),
            Ok(Event::Incoming(Packet::Publish(p))) => Ev::Publish(Msg {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                qos: p.qos as u8,
                retain: p.retain,
                dup: p.dup,
                pkid: p.pkid,
            }),
            Ok(Event::Incoming(Packet::PubAck(_))) | Ok(Event::Incoming(Packet::PubComp(_))) => {
                Ev::Acked
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Ev::OutgoingDisconnect,
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Ev::Closed(e.to_string()));
                return;
            }
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

async fn run_v5(mut eventloop: rumqttc::v5::EventLoop, tx: mpsc::Sender<Ev>) {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, SubscribeReasonCode};
    use rumqttc::v5::{ConnectionError, Event, StateError};
    use rumqttc::Outgoing;
    loop {
        let ev = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(a))) => Ev::ConnAck {
                session_present: a.session_present,
                code: if a.code == ConnectReturnCode::Success {
                    0
                } else {
                    0x80
                },
            },
            Ok(Event::Incoming(Packet::SubAck(a))) => Ev::SubAck(
                a.return_codes
                    .iter()
                    .map(|c| match c {
                        SubscribeReasonCode::Success(q) => *q as u8,
                        _ => 0x80,
                    })
                    .collect(),
            ),
            Ok(Event::Incoming(Packet::Publish(p))) => Ev::Publish(Msg {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.to_vec(),
                qos: p.qos as u8,
                retain: p.retain,
                dup: p.dup,
                pkid: p.pkid,
            }),
            Ok(Event::Incoming(Packet::PubAck(_))) | Ok(Event::Incoming(Packet::PubComp(_))) => {
                Ev::Acked
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => Ev::Disconnect(d.reason_code as u8),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Ev::OutgoingDisconnect,
            Ok(_) => continue,
            Err(e) => {
                // rumqttc reports a server DISCONNECT as an error of the event loop.
                if let ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                }) = &e
                {
                    let _ = tx.send(Ev::Disconnect(*reason_code as u8));
                }
                let _ = tx.send(Ev::Closed(e.to_string()));
                return;
            }
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// A client id unique within this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}
