//! The configuration's sections: one type per TOML table, and the value types they hold.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SHARD_COUNT_MAX;

/// Per-org caps (each org, the default one included). Going over one is a clear refusal
/// (v5 reason code, HTTP 403/429 with a JSON body), never a silent drop or another org's loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgLimits {
    /// Most payload and topic bytes of retained messages one org keeps (over all shards).
    pub retained_bytes_max: u64,
    /// Most bytes of QoS 1/2 messages queued for one org's disconnected sessions (per shard).
    pub offline_queue_bytes_max: u64,
    /// Most MQTT users in one org.
    pub users_max: u64,
    /// Most ACL rules in one org (over all its rule sets).
    pub acl_rules_max: u64,
    /// Most API keys (not revoked) in one org.
    pub keys_max: u64,
    /// Most open WebSocket and SSE streams of one org (per shard).
    pub streams_max: u64,
    /// Most token exchanges one org may make per minute.
    pub token_exchanges_per_minute_max: u32,
}

/// The HTTP front door's policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// Origins (`scheme://host[:port]`) whose browser pages may open a WebSocket (`/mqtt`,
    /// `/v1/mqtt/stream`); the broker's own HTTP(S) addresses are always allowed. A request
    /// without an `Origin` header (devices, servers) is not a browser and is unaffected.
    pub allowed_origins: Vec<String>,
    /// Longest time a request body may take to arrive in full, in milliseconds (slowloris).
    pub body_timeout_ms: u64,
}

/// TLS certificate, key and client-certificate settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain (end-entity first); empty: no TLS.
    pub cert_path: PathBuf,
    /// PEM private key of the certificate; empty: no TLS.
    pub key_path: PathBuf,
    /// PEM CA certificates that sign client certificates; empty: no client certificates.
    pub client_ca_path: PathBuf,
    /// Whether clients present certificates.
    pub client_auth: TlsClientAuth,
    /// How long a TLS handshake may take before the connection is dropped.
    pub handshake_timeout_ms: u64,
}

impl Tls {
    /// The files as the IO layer takes them.
    pub fn files(&self) -> ringmq_io::tls::TlsFiles {
        ringmq_io::tls::TlsFiles {
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            client_ca_path: (!self.client_ca_path.as_os_str().is_empty())
                .then(|| self.client_ca_path.clone()),
            client_auth: match self.client_auth {
                TlsClientAuth::None => ringmq_io::tls::ClientAuth::None,
                TlsClientAuth::Optional => ringmq_io::tls::ClientAuth::Optional,
                TlsClientAuth::Required => ringmq_io::tls::ClientAuth::Required,
            },
        }
    }
}

/// Whether TLS clients present certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsClientAuth {
    /// Not asked for.
    None,
    /// Asked for; a client without one still connects.
    Optional,
    /// A client without a valid certificate fails the handshake.
    Required,
}

/// A listen address that may be off: `""` in TOML.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl Serialize for OptionalAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(addr) => serializer.collect_str(&addr),
            None => serializer.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for OptionalAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Ok(OptionalAddr(None));
        }
        text.trim()
            .parse()
            .map(|addr| OptionalAddr(Some(addr)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid socket address {text:?} (expected IP:PORT, or \"\" for off)"
                ))
            })
    }
}

/// Listening sockets and connection placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// MQTT over TCP listen address (default 127.0.0.1:1883).
    pub mqtt: SocketAddr,
    /// HTTP listen address (default 127.0.0.1:8080).
    pub http: SocketAddr,
    /// MQTT over TLS listen address; off when empty.
    pub mqtts: OptionalAddr,
    /// HTTPS (and WSS) listen address; off when empty.
    pub https: OptionalAddr,
    /// How accepted connections are spread over shards.
    pub placement: Placement,
    /// Listen backlog passed to listen(2).
    pub backlog: i32,
}

/// How accepted connections are spread over shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Every shard accepts on its own SO_REUSEPORT socket; the kernel picks the shard.
    ReusePort,
    /// One acceptor thread hands connection k to shard k % n (even and deterministic).
    RoundRobin,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::ReusePort => "reuse-port",
            Placement::RoundRobin => "round-robin",
        })
    }
}

/// Shard threads and the cross-shard mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shards {
    /// Number of shard threads, or one per core.
    pub count: ShardCount,
    /// Pin each shard thread to its own core.
    pub pin_cores: bool,
    /// io_uring submission queue entries per shard (a power of two).
    pub ring_entries: u32,
    /// Capacity in messages of each cross-shard queue (one per ordered pair of shards).
    pub mesh_queue_capacity: usize,
    /// Most messages handed to another shard before it is woken.
    pub mesh_batch_max: usize,
    /// Let the kernel back the heap with transparent huge pages (faster fan-out, about 2 KB
    /// more memory per idle connection).
    pub huge_pages: bool,
}

/// The number of shard threads: one per available core, or a fixed number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardCount {
    /// One shard per core reported by `std::thread::available_parallelism`.
    Auto,
    /// Exactly this many shards (validated to 1..=64).
    Fixed(usize),
}

impl ShardCount {
    /// Resolves `Auto` to the number of available cores, capped at [`SHARD_COUNT_MAX`].
    pub fn resolve(self) -> usize {
        match self {
            ShardCount::Fixed(count) => count,
            // A machine that cannot report its cores still gets one working shard.
            ShardCount::Auto => std::thread::available_parallelism()
                .map(|cores| cores.get())
                .unwrap_or(1)
                .min(SHARD_COUNT_MAX),
        }
    }
}

impl fmt::Display for ShardCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardCount::Auto => f.write_str("auto"),
            ShardCount::Fixed(count) => write!(f, "{count}"),
        }
    }
}

impl FromStr for ShardCount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(ShardCount::Auto);
        }
        match text.parse::<usize>() {
            Ok(count) if (1..=SHARD_COUNT_MAX).contains(&count) => Ok(ShardCount::Fixed(count)),
            _ => Err(format!(
                "expected \"auto\" or a number of shards from 1 to {SHARD_COUNT_MAX}, got {text:?}"
            )),
        }
    }
}

impl Serialize for ShardCount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ShardCount::Auto => serializer.serialize_str("auto"),
            ShardCount::Fixed(count) => serializer.serialize_u64(*count as u64),
        }
    }
}

impl<'de> Deserialize<'de> for ShardCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Accepts the string "auto" or a non-negative integer; the range is checked in validate.
        struct ShardCountVisitor;

        impl serde::de::Visitor<'_> for ShardCountVisitor {
            type Value = ShardCount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a number of shards")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ShardCount, E> {
                if text.eq_ignore_ascii_case("auto") {
                    Ok(ShardCount::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(text), &self))
                }
            }

            fn visit_u64<E: serde::de::Error>(self, count: u64) -> Result<ShardCount, E> {
                usize::try_from(count)
                    .map(ShardCount::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(count), &self))
            }

            fn visit_i64<E: serde::de::Error>(self, count: i64) -> Result<ShardCount, E> {
                usize::try_from(count)
                    .map(ShardCount::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(count), &self))
            }
        }

        deserializer.deserialize_any(ShardCountVisitor)
    }
}

/// Named bounds on every resource a client or the broker can consume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest MQTT packet accepted or sent, in bytes (v5 Maximum Packet Size).
    pub packet_size_max: u32,
    /// Most concurrent client connections over all shards.
    pub connections_max: usize,
    /// Most unacknowledged QoS 1/2 messages per client per direction (v5 Receive Maximum).
    pub inflight_max: u16,
    /// Most bytes queued for one connected client.
    pub outbox_bytes_max: usize,
    /// Most QoS 1/2 messages queued for one disconnected persistent session.
    pub offline_queue_max: usize,
    /// Most levels in a topic name or filter.
    pub topic_levels_max: usize,
    /// Most subscriptions one client may hold.
    pub subscriptions_per_client_max: usize,
    /// Highest keep-alive granted, in seconds (v5 Server Keep Alive above it).
    pub keep_alive_max_secs: u16,
    /// Time a new connection has to send CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest session expiry interval honoured, in seconds.
    pub session_expiry_max_secs: u32,
    /// Most topic aliases per connection per direction (0 disables them, as in MQTT 5).
    pub topic_alias_max: u16,
    /// Most retained messages kept by the broker.
    pub retained_messages_max: usize,
    /// Longest client identifier accepted, in bytes.
    pub client_id_bytes_max: usize,
    /// Most messages in one `POST /v1/publish/batch`.
    pub rest_batch_max: usize,
    /// Frames a WebSocket or SSE stream subscriber holds for a slow client (oldest dropped).
    pub stream_ring_frames: usize,
}

/// Buffering and slow-consumer policy on the data path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// What happens to a QoS 0 message for a client whose outbox is full.
    pub qos0_slow_consumer: SlowConsumerPolicy,
    /// Read room of a quiet connection, in bytes (what an idle connection holds); a connection
    /// whose read fills it gets the whole `read_budget_bytes` until it is quiet again.
    pub read_buffer_bytes: usize,
    /// Most bytes read from one connection per read (the ceiling busy connections grow to).
    pub read_budget_bytes: usize,
    /// Most bytes coalesced into one write.
    pub write_batch_bytes: usize,
}

/// What happens to a QoS 0 message for a client whose outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Keep what is queued and drop the new message.
    DropNew,
    /// Drop the oldest queued QoS 0 message to make room for the new one.
    DropOldest,
    /// Disconnect the slow client.
    Disconnect,
}

/// Whether MQTT clients without a username are accepted (into the default org, with full rights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anonymous {
    /// Only while every listener is on a loopback address (the embedded quick start), as
    /// mosquitto 2 does in its local-only mode.
    Loopback,
    /// Always, on any listener: the operator said so.
    Allow,
    /// Never.
    Deny,
}

/// Token-exchange auth providers and other authentication settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// JWT issuers whose tokens `POST /v1/token-exchange` accepts.
    #[serde(default)]
    pub providers: Vec<crate::control::jwt::ProviderConfig>,
    /// Failed MQTT logins from one source address allowed per minute before CONNECTs from it are
    /// refused without checking (password guessing).
    #[serde(default = "default_login_failures_per_minute_max")]
    pub login_failures_per_minute_max: u32,
}

fn default_login_failures_per_minute_max() -> u32 {
    10
}

/// MQTT feature switches and operator policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttOptions {
    /// Filters whose SUBSCRIBE is answered with reason code 0x80 (exact filter match).
    pub refused_topics: Vec<String>,
    /// Whether clients that send no username are accepted.
    pub anonymous: Anonymous,
    /// Interval between `$SYS/` statistics publications, in seconds.
    pub sys_interval_secs: u32,
    /// Support retained messages (v5 Retain Available).
    pub retain_available: bool,
    /// Support `+` and `#` in filters (v5 Wildcard Subscription Available).
    pub wildcard_subscriptions: bool,
    /// Support `$share/{group}/{filter}` (v5 Shared Subscription Available).
    pub shared_subscriptions: bool,
    /// Support v5 Subscription Identifiers.
    pub subscription_identifiers: bool,
    /// Highest QoS granted (v5 Maximum QoS).
    pub maximum_qos: u8,
}

/// Nodes of a cluster meeting on NATS (issue 14; `docs/cluster.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The NATS server, `nats://[USER:PASSWORD@]HOST:PORT` (or `tls://`); empty: one node, no
    /// cluster.
    pub nats: String,
    /// This node's name in the cluster (letters, digits, `-`, `_`; 1 to 64 characters).
    pub node_id: String,
    /// The first token of every subject the cluster uses, so clusters can share a NATS server.
    pub subject_prefix: String,
    /// Messages waiting to go to NATS; past it a message is not sent to the other nodes
    /// (counted in `ringmq_cluster_dropped_total`), never waited for on a shard.
    pub outbound_queue: usize,
    /// Messages from NATS waiting for each shard; past it they are dropped (counted).
    pub inbound_queue: usize,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            nats: String::new(),
            node_id: String::new(),
            subject_prefix: "rmq".into(),
            outbound_queue: 65536,
            inbound_queue: 65536,
        }
    }
}

/// Where the control plane (orgs, users, keys, ACL rules) lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`, shared by every node of a cluster; empty:
    /// SQLite in `data_dir` (one node).
    pub store: String,
    /// How often a node asks a shared store whether another node changed it, in milliseconds
    /// (one single-row query; the change is in force on this node within about this).
    pub reload_interval_ms: u64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            store: String::new(),
            reload_interval_ms: 250,
        }
    }
}

/// What survives a restart, and at what cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durability {
    /// `memory`, `periodic` or `sync` (see [`DurabilityMode`]).
    pub mode: DurabilityMode,
    /// How often each shard checkpoints its changed sessions and syncs its log (periodic mode:
    /// the most a kill -9 or a power cut loses).
    pub sync_interval_ms: u64,
    /// `sync` mode: how long a round of QoS 1 PUBACKs waits for every copy of its messages to
    /// be acknowledged by their subscribers (delivered: nothing left to store) before it asks
    /// for a sync instead; 0 asks at once.
    pub consume_grace_us: u64,
    /// A shard's log is compacted (rewritten as its live state) once it exceeds this many
    /// bytes and four times the size of its last compaction.
    pub compact_log_bytes: u64,
    /// The most one shard's log may take on disk. A batch that would pass it makes the shard
    /// compact first; a live state that needs more even compacted is refused as on a full
    /// disk (v5 0x97, v3 closed, REST 507) until consumers make room. At least
    /// `compact_log_bytes`.
    pub max_log_bytes: u64,
    /// Start even when a log is damaged in the middle, dropping what follows the damage (said
    /// in the log); without it such a start stops with a message naming the file.
    pub repair: bool,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            mode: DurabilityMode::Periodic,
            sync_interval_ms: 1000,
            consume_grace_us: 1000,
            compact_log_bytes: 64 << 20,
            max_log_bytes: 8 << 30,
            repair: false,
        }
    }
}

/// What the broker writes to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// Nothing: a restart forgets retained messages and sessions (the control plane stays).
    Memory,
    /// Every change is logged and synced every `sync_interval_ms`: a clean stop loses nothing,
    /// a crash at most one interval.
    Periodic,
    /// As `Periodic`, and acknowledgements of QoS 1/2 publishes wait for the logs' sync.
    Sync,
}

impl std::str::FromStr for DurabilityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(DurabilityMode::Memory),
            "periodic" => Ok(DurabilityMode::Periodic),
            "sync" => Ok(DurabilityMode::Sync),
            other => Err(format!(
                "unknown durability mode `{other}`; expected memory, periodic or sync"
            )),
        }
    }
}
