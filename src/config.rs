//! Broker configuration: embedded tuning profiles, config files and flags, layered and validated.
//!
//! Layers, each a partial overlay of the one before (merged as TOML tables, key by key):
//! 1. `tuning/default.toml`, embedded in the binary, which sets every knob;
//! 2. the profile (`--profile NAME|PATH`): an embedded profile by name, or a file;
//! 3. `--config FILE`;
//! 4. command-line flags ([`ServeOverrides`]).
//!
//! Every layer is checked on its own as it is applied, so an unknown key or a wrong type is
//! reported with the file it came from. The merged result is deserialized into [`Config`]
//! (unknown fields denied everywhere) and then [`Config::validate`] checks the ranges.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The complete base layer; a unit test proves it sets every knob and validates.
const DEFAULT_TOML: &str = include_str!("../tuning/default.toml");

/// Embedded profiles, in the order `ringmq profiles` lists them.
const EMBEDDED_PROFILES: &[(&str, &str)] = &[
    ("default", DEFAULT_TOML),
    ("latency", include_str!("../tuning/latency.toml")),
    ("throughput", include_str!("../tuning/throughput.toml")),
    (
        "small-device-fleet",
        include_str!("../tuning/small-device-fleet.toml"),
    ),
    ("conformance", include_str!("../tuning/conformance.toml")),
];

/// Most shards a broker may run; the mesh has one queue per ordered pair, so this bounds n².
pub const SHARD_COUNT_MAX: usize = 64;

/// Largest MQTT packet on the wire: 1 fixed-header byte, 4 length bytes, 268_435_455 remaining.
pub const MQTT_PACKET_SIZE_MAX: u32 = 268_435_460;

/// Returns the embedded tuning profiles as `(name, toml text)` pairs.
pub fn embedded_profiles() -> &'static [(&'static str, &'static str)] {
    EMBEDDED_PROFILES
}

/// The effective broker configuration after every layer is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for broker state (sessions, control plane).
    pub data_dir: PathBuf,
    /// Listening sockets and how connections reach shards.
    pub listeners: Listeners,
    /// Shard threads, their rings and the cross-shard mesh.
    pub shards: Shards,
    /// Named bounds on every per-client and broker-wide resource.
    pub limits: Limits,
    /// Buffering and slow-consumer policy on the data path.
    pub delivery: Delivery,
    /// MQTT feature switches and operator policy.
    pub mqtt: MqttOptions,
    /// Authentication: token-exchange providers, login throttling.
    #[serde(default)]
    pub auth: Auth,
    /// TLS certificates for the `mqtts` and `https` listeners, and client certificates.
    pub tls: Tls,
    /// Caps every org lives under, so one tenant cannot spend what another needs.
    pub org_limits: OrgLimits,
    /// The HTTP front door: browser origins, request deadlines.
    pub http: HttpOptions,
}

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

/// Settings given on the command line; each `Some` overrides every file layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeOverrides {
    /// `--mqtt-listen`: overrides `listeners.mqtt`.
    pub mqtt_listen: Option<SocketAddr>,
    /// `--http-listen`: overrides `listeners.http`.
    pub http_listen: Option<SocketAddr>,
    /// `--mqtts-listen`: overrides `listeners.mqtts`.
    pub mqtts_listen: Option<SocketAddr>,
    /// `--https-listen`: overrides `listeners.https`.
    pub https_listen: Option<SocketAddr>,
    /// `--shards`: overrides `shards.count`.
    pub shards: Option<ShardCount>,
    /// `--data-dir`: overrides `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `--placement`: overrides `listeners.placement`.
    pub placement: Option<Placement>,
    /// `--profile`: an embedded profile name or a file path.
    pub profile: Option<String>,
    /// `--config`: a partial config file applied after the profile.
    pub config: Option<PathBuf>,
}

/// Why a configuration could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// `--profile` named no embedded profile and does not look like a path.
    #[error("unknown profile `{name}`; embedded profiles are {known} (a path must contain `/` or end in `.toml`)")]
    UnknownProfile {
        /// The name given.
        name: String,
        /// The embedded profile names, comma separated.
        known: String,
    },
    /// A profile or config file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// A layer is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// Which layer: a file path, an embedded profile or the command line.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The merged configuration is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Whether clients without a username are accepted, with the loopback rule applied.
    pub fn anonymous_allowed(&self) -> bool {
        match self.mqtt.anonymous {
            Anonymous::Allow => true,
            Anonymous::Deny => false,
            Anonymous::Loopback => self.listen_addrs().all(|addr| addr.ip().is_loopback()),
        }
    }

    /// Every address the broker listens on.
    pub fn listen_addrs(&self) -> impl Iterator<Item = SocketAddr> {
        let l = &self.listeners;
        [Some(l.mqtt), Some(l.http), l.mqtts.0, l.https.0]
            .into_iter()
            .flatten()
    }

    /// True when a TLS listener is configured.
    pub fn tls_enabled(&self) -> bool {
        self.listeners.mqtts.0.is_some() || self.listeners.https.0.is_some()
    }

    /// Loads default → profile → config file → flags, then validates the result.
    pub fn load(overrides: &ServeOverrides) -> Result<Config, ConfigError> {
        let mut loader = Loader::new()?;
        if let Some(profile) = &overrides.profile {
            let (origin, text) = profile_source(profile)?;
            loader.apply_text(&origin, &text)?;
        }
        if let Some(path) = &overrides.config {
            let text = read_file(path)?;
            loader.apply_text(&format!("config file {}", path.display()), &text)?;
        }
        loader.apply(
            "command-line flags",
            toml::Value::Table(overrides_table(overrides)?),
        )?;
        let config = loader.config;
        config.validate()?;
        Ok(config)
    }

    /// The embedded default profile alone; a broken embedded default is a build bug, so it panics.
    pub fn embedded_default() -> Config {
        let loader = Loader::new().expect("embedded tuning/default.toml must parse");
        loader.config
    }

    /// Checks ranges and cross-field consistency, naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listeners = &self.listeners;
        // Port 0 asks the kernel for a free port, so two port-0 listeners do not collide.
        if listeners.mqtt == listeners.http && listeners.mqtt.port() != 0 {
            return invalid(format!(
                "listeners.mqtt and listeners.http are both {}",
                listeners.mqtt
            ));
        }
        check_range("listeners.backlog", listeners.backlog, 1, 65535)?;
        let named = [
            ("listeners.mqtt", Some(listeners.mqtt)),
            ("listeners.http", Some(listeners.http)),
            ("listeners.mqtts", listeners.mqtts.0),
            ("listeners.https", listeners.https.0),
        ];
        for (i, (name, addr)) in named.iter().enumerate() {
            for (other, other_addr) in &named[i + 1..] {
                if let (Some(a), Some(b)) = (addr, other_addr) {
                    if a == b && a.port() != 0 {
                        return invalid(format!("{name} and {other} are both {a}"));
                    }
                }
            }
        }
        let tls = &self.tls;
        if self.tls_enabled()
            && (tls.cert_path.as_os_str().is_empty() || tls.key_path.as_os_str().is_empty())
        {
            return invalid(
                "listeners.mqtts or listeners.https is set, so tls.cert_path and tls.key_path \
                 must name the certificate and key files"
                    .to_string(),
            );
        }
        if tls.client_auth != TlsClientAuth::None && tls.client_ca_path.as_os_str().is_empty() {
            return invalid(
                "tls.client_auth asks for client certificates, so tls.client_ca_path must name \
                 the CA file that signs them"
                    .to_string(),
            );
        }
        check_range(
            "tls.handshake_timeout_ms",
            tls.handshake_timeout_ms,
            100,
            600_000,
        )?;

        let shards = &self.shards;
        if let ShardCount::Fixed(count) = shards.count {
            check_range("shards.count", count, 1, SHARD_COUNT_MAX)?;
        }
        check_range("shards.ring_entries", shards.ring_entries, 8, 32768)?;
        if !shards.ring_entries.is_power_of_two() {
            return invalid(format!(
                "shards.ring_entries must be a power of two, got {}",
                shards.ring_entries
            ));
        }
        check_range(
            "shards.mesh_queue_capacity",
            shards.mesh_queue_capacity,
            1,
            1 << 20,
        )?;
        check_range(
            "shards.mesh_batch_max",
            shards.mesh_batch_max,
            1,
            shards.mesh_queue_capacity,
        )?;

        let limits = &self.limits;
        check_range(
            "limits.packet_size_max",
            limits.packet_size_max,
            64,
            MQTT_PACKET_SIZE_MAX,
        )?;
        check_range(
            "limits.connections_max",
            limits.connections_max,
            1,
            10_000_000,
        )?;
        check_range("limits.inflight_max", limits.inflight_max, 1, u16::MAX)?;
        // An outbox smaller than one packet could never deliver a maximum-size message.
        let packet_size_max = limits.packet_size_max as usize;
        check_range(
            "limits.outbox_bytes_max",
            limits.outbox_bytes_max,
            packet_size_max,
            1 << 32,
        )
        .map_err(|_| {
            ConfigError::Invalid(format!(
                "limits.outbox_bytes_max must be between limits.packet_size_max ({packet_size_max}) and {}, got {}",
                1u64 << 32,
                limits.outbox_bytes_max
            ))
        })?;
        check_range(
            "limits.offline_queue_max",
            limits.offline_queue_max,
            1,
            10_000_000,
        )?;
        check_range("limits.topic_levels_max", limits.topic_levels_max, 1, 1024)?;
        check_range(
            "limits.subscriptions_per_client_max",
            limits.subscriptions_per_client_max,
            1,
            1_000_000,
        )?;
        check_range(
            "limits.keep_alive_max_secs",
            limits.keep_alive_max_secs,
            1,
            u16::MAX,
        )?;
        check_range(
            "limits.connect_timeout_ms",
            limits.connect_timeout_ms,
            100,
            600_000,
        )?;
        // u32::MAX is MQTT's "never expires", which a bounded broker does not grant.
        check_range(
            "limits.session_expiry_max_secs",
            limits.session_expiry_max_secs,
            0,
            u32::MAX - 1,
        )?;
        check_range("limits.rest_batch_max", limits.rest_batch_max, 1, 10_000)?;
        check_range(
            "limits.stream_ring_frames",
            limits.stream_ring_frames,
            1,
            1_000_000,
        )?;
        check_range(
            "limits.retained_messages_max",
            limits.retained_messages_max,
            1,
            100_000_000,
        )?;
        // MQTT requires servers to accept client identifiers of at least 23 bytes.
        check_range(
            "limits.client_id_bytes_max",
            limits.client_id_bytes_max,
            23,
            65535,
        )?;

        let org = &self.org_limits;
        check_range(
            "org_limits.retained_bytes_max",
            org.retained_bytes_max,
            1,
            1 << 40,
        )?;
        check_range(
            "org_limits.offline_queue_bytes_max",
            org.offline_queue_bytes_max,
            1,
            1 << 40,
        )?;
        check_range("org_limits.users_max", org.users_max, 1, 100_000_000)?;
        check_range("org_limits.acl_rules_max", org.acl_rules_max, 1, 10_000_000)?;
        check_range("org_limits.keys_max", org.keys_max, 1, 10_000_000)?;
        check_range("org_limits.streams_max", org.streams_max, 1, 10_000_000)?;
        check_range(
            "org_limits.token_exchanges_per_minute_max",
            org.token_exchanges_per_minute_max,
            1,
            1_000_000,
        )?;
        for origin in &self.http.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.trim_end_matches('/').matches('/').count() != 2
            {
                return invalid(format!(
                    "http.allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
        }
        check_range(
            "http.body_timeout_ms",
            self.http.body_timeout_ms,
            100,
            600_000,
        )?;

        let delivery = &self.delivery;
        check_range(
            "delivery.read_buffer_bytes",
            delivery.read_buffer_bytes,
            128,
            16 << 20,
        )?;
        if delivery.read_buffer_bytes > delivery.read_budget_bytes {
            return Err(ConfigError::Invalid(format!(
                "delivery.read_buffer_bytes ({}) must not exceed delivery.read_budget_bytes ({})",
                delivery.read_buffer_bytes, delivery.read_budget_bytes
            )));
        }
        check_range(
            "delivery.read_budget_bytes",
            delivery.read_budget_bytes,
            512,
            64 << 20,
        )?;
        check_range(
            "delivery.write_batch_bytes",
            delivery.write_batch_bytes,
            512,
            16 << 20,
        )?;

        let mqtt = &self.mqtt;
        check_range("mqtt.sys_interval_secs", mqtt.sys_interval_secs, 1, 86_400)?;
        check_range("mqtt.maximum_qos", mqtt.maximum_qos, 0, 2)?;
        for filter in &mqtt.refused_topics {
            if let Err(reason) = check_filter(filter, limits.topic_levels_max) {
                return invalid(format!(
                    "mqtt.refused_topics entry {filter:?} is not a valid topic filter: {reason}"
                ));
            }
        }

        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty".to_string());
        }
        if self.data_dir.to_str().is_none() {
            return invalid(format!(
                "data_dir must be valid UTF-8, got {}",
                self.data_dir.display()
            ));
        }
        Ok(())
    }

    /// The number of shard threads to run, resolving `auto` to the available cores.
    pub fn shard_count(&self) -> usize {
        self.shards.count.resolve()
    }

    /// Renders the configuration as TOML, in the format the layers accept.
    pub fn to_toml(&self) -> String {
        // Only a non-UTF-8 data_dir can fail, and validate rejects that; say so rather than panic.
        toml::to_string_pretty(self)
            .unwrap_or_else(|error| format!("# cannot render the configuration as TOML: {error}\n"))
    }
}

/// Applies layers one at a time so each error names the layer it came from.
struct Loader {
    /// The merged TOML so far; always deserializes into `config`.
    merged: toml::Table,
    /// The typed view of `merged`, refreshed after every layer.
    config: Config,
}

impl Loader {
    /// Starts from the embedded default, which must set every knob.
    fn new() -> Result<Loader, ConfigError> {
        const ORIGIN: &str = "embedded profile `default` (tuning/default.toml)";
        let merged = parse_table(ORIGIN, DEFAULT_TOML)?;
        let config = deserialize(ORIGIN, &merged)?;
        Ok(Loader { merged, config })
    }

    /// Parses one layer's text and applies it.
    fn apply_text(&mut self, origin: &str, text: &str) -> Result<(), ConfigError> {
        let table = parse_table(origin, text)?;
        self.apply(origin, toml::Value::Table(table))
    }

    /// Overlays one layer: every key must exist in the base with the same shape.
    fn apply(&mut self, origin: &str, layer: toml::Value) -> Result<(), ConfigError> {
        let toml::Value::Table(layer) = layer else {
            return Err(parse_error(origin, "a layer must be a TOML table".into()));
        };
        let mut merged = self.merged.clone();
        merge_table(&mut merged, layer, "").map_err(|message| parse_error(origin, message))?;
        self.config = deserialize(origin, &merged)?;
        self.merged = merged;
        Ok(())
    }
}

/// Merges `overlay` into `base` key by key; a key absent from `base` is an unknown key.
fn merge_table(base: &mut toml::Table, overlay: toml::Table, prefix: &str) -> Result<(), String> {
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(slot) = base.get_mut(&key) else {
            let known: Vec<&str> = base.keys().map(String::as_str).collect();
            let place = if prefix.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{prefix}]")
            };
            return Err(format!(
                "unknown key `{path}` (known keys {place}: {})",
                known.join(", ")
            ));
        };
        match (slot, value) {
            (toml::Value::Table(base_table), toml::Value::Table(overlay_table)) => {
                merge_table(base_table, overlay_table, &path)?;
            }
            (toml::Value::Table(_), _) => {
                return Err(format!("`{path}` must be a table ([{path}])"));
            }
            (_, toml::Value::Table(_)) => {
                return Err(format!("`{path}` is a single value, not a table"));
            }
            (slot, value) => *slot = value,
        }
    }
    Ok(())
}

/// Parses a layer's text as a TOML table.
fn parse_table(origin: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|error| parse_error(origin, error.to_string()))
}

/// Deserializes the merged table; type errors are blamed on the layer just applied.
fn deserialize(origin: &str, merged: &toml::Table) -> Result<Config, ConfigError> {
    Config::deserialize(toml::Value::Table(merged.clone()))
        // serde puts the key path on a second line; one line reads better in a log.
        .map_err(|error| parse_error(origin, error.to_string().trim_end().replace('\n', " ")))
}

/// Builds a parse error for one layer.
fn parse_error(origin: &str, message: String) -> ConfigError {
    ConfigError::Parse {
        origin: origin.to_string(),
        message,
    }
}

/// Resolves `--profile` to its origin label and TOML text.
fn profile_source(profile: &str) -> Result<(String, String), ConfigError> {
    // A slash or a .toml suffix means a file, so a site profile never shadows an embedded name.
    if profile.contains('/') || profile.ends_with(".toml") {
        let path = Path::new(profile);
        let text = read_file(path)?;
        return Ok((format!("profile file {}", path.display()), text));
    }
    match EMBEDDED_PROFILES.iter().find(|(name, _)| *name == profile) {
        Some((name, text)) => Ok((
            format!("embedded profile `{name}` (tuning/{name}.toml)"),
            (*text).to_string(),
        )),
        None => Err(ConfigError::UnknownProfile {
            name: profile.to_string(),
            known: EMBEDDED_PROFILES
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Reads a layer file.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Turns the command-line overrides into a partial TOML layer.
fn overrides_table(overrides: &ServeOverrides) -> Result<toml::Table, ConfigError> {
    let mut root = toml::Table::new();
    let mut listeners = toml::Table::new();
    if let Some(address) = overrides.mqtt_listen {
        listeners.insert("mqtt".into(), toml::Value::String(address.to_string()));
    }
    if let Some(address) = overrides.http_listen {
        listeners.insert("http".into(), toml::Value::String(address.to_string()));
    }
    if let Some(address) = overrides.mqtts_listen {
        listeners.insert("mqtts".into(), toml::Value::String(address.to_string()));
    }
    if let Some(address) = overrides.https_listen {
        listeners.insert("https".into(), toml::Value::String(address.to_string()));
    }
    if let Some(placement) = overrides.placement {
        listeners.insert(
            "placement".into(),
            toml::Value::String(placement.to_string()),
        );
    }
    if !listeners.is_empty() {
        root.insert("listeners".into(), toml::Value::Table(listeners));
    }
    if let Some(count) = overrides.shards {
        let value = match count {
            ShardCount::Auto => toml::Value::String("auto".into()),
            ShardCount::Fixed(count) => match i64::try_from(count) {
                Ok(count) => toml::Value::Integer(count),
                Err(_) => return invalid(format!("--shards {count} is out of range")),
            },
        };
        let mut shards = toml::Table::new();
        shards.insert("count".into(), value);
        root.insert("shards".into(), toml::Value::Table(shards));
    }
    if let Some(data_dir) = &overrides.data_dir {
        let Some(text) = data_dir.to_str() else {
            return invalid(format!(
                "--data-dir must be valid UTF-8, got {}",
                data_dir.display()
            ));
        };
        root.insert("data_dir".into(), toml::Value::String(text.to_string()));
    }
    Ok(root)
}

/// Checks that a refused-topics entry is a well-formed MQTT topic filter.
fn check_filter(filter: &str, levels_max: usize) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err("it is longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("it contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    if levels.len() > levels_max {
        return Err("it has more levels than limits.topic_levels_max");
    }
    let last = levels.len() - 1;
    for (index, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || index != last) {
            return Err("`#` must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level");
        }
    }
    Ok(())
}

/// Fails with `NAME must be between LOW and HIGH, got VALUE` when `value` is out of range.
fn check_range<T>(name: &str, value: T, low: T, high: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if value < low || value > high {
        return invalid(format!(
            "{name} must be between {low} and {high}, got {value}"
        ));
    }
    Ok(())
}

/// Shorthand for an `Invalid` error.
fn invalid<T>(message: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads with only a profile set.
    fn load_profile(profile: &str) -> Result<Config, ConfigError> {
        Config::load(&ServeOverrides {
            profile: Some(profile.to_string()),
            ..ServeOverrides::default()
        })
    }

    /// A scratch directory unique to one test.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringmq-config-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn every_embedded_profile_loads_and_validates() {
        for (name, _) in embedded_profiles() {
            let config = load_profile(name).unwrap_or_else(|error| panic!("{name}: {error}"));
            config.validate().expect("validated");
        }
        let names: Vec<&str> = embedded_profiles().iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "default",
                "latency",
                "throughput",
                "small-device-fleet",
                "conformance"
            ]
        );
    }

    #[test]
    fn default_sets_every_knob_with_documented_values() {
        let config = Config::load(&ServeOverrides::default()).expect("default loads");
        assert_eq!(config, Config::embedded_default());
        assert_eq!(config.listeners.mqtt, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(config.listeners.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.listeners.placement, Placement::ReusePort);
        assert_eq!(config.shards.count, ShardCount::Auto);
        assert_eq!(config.limits.packet_size_max, 262_144);
        assert_eq!(config.limits.session_expiry_max_secs, 7 * 86_400);
        assert_eq!(
            config.delivery.qos0_slow_consumer,
            SlowConsumerPolicy::DropNew
        );
        assert!(config.mqtt.refused_topics.is_empty());
        // Memory per idle connection is the fleet figure: no huge pages unless asked for.
        assert!(!config.shards.huge_pages);
        assert!(load_profile("throughput").expect("loads").shards.huge_pages);
        assert!(
            !load_profile("small-device-fleet")
                .expect("loads")
                .shards
                .huge_pages
        );
        assert_eq!(config.data_dir, PathBuf::from("./ringmq-data"));
        assert!(config.shard_count() >= 1 && config.shard_count() <= SHARD_COUNT_MAX);
    }

    #[test]
    fn profile_files_name_only_known_keys() {
        // Every knob in every profile exists in default.toml (the loader enforces it too, but
        // this names the file directly when someone adds a key to one profile only).
        let default: toml::Table = DEFAULT_TOML.parse().unwrap();
        for (name, text) in embedded_profiles() {
            let table: toml::Table = text.parse().unwrap();
            let mut base = default.clone();
            merge_table(&mut base, table, "").unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn conformance_profile_sets_operator_policy() {
        let config = load_profile("conformance").unwrap();
        assert_eq!(config.mqtt.refused_topics, ["test/nosubscribe"]);
        assert_eq!(config.limits.keep_alive_max_secs, 60);
        // Knobs the profile does not name keep the default.
        assert_eq!(config.limits.inflight_max, 1024);
    }

    #[test]
    fn small_device_fleet_is_small() {
        let fleet = load_profile("small-device-fleet").unwrap();
        let default = Config::embedded_default();
        assert!(fleet.delivery.read_buffer_bytes < default.delivery.read_buffer_bytes);
        assert!(fleet.limits.outbox_bytes_max < default.limits.outbox_bytes_max);
        assert!(fleet.limits.connections_max > default.limits.connections_max);
    }

    #[test]
    fn overlay_order_is_default_profile_config_flags() {
        let dir = scratch_dir("order");
        let config_path = dir.join("site.toml");
        std::fs::write(
            &config_path,
            "[limits]\ninflight_max = 7\n[listeners]\nmqtt = \"0.0.0.0:1999\"\n",
        )
        .unwrap();
        let overrides = ServeOverrides {
            profile: Some("latency".into()),
            config: Some(config_path),
            mqtt_listen: Some("127.0.0.1:2883".parse().unwrap()),
            shards: Some(ShardCount::Fixed(2)),
            placement: Some(Placement::RoundRobin),
            data_dir: Some("/tmp/ringmq-test-data".into()),
            http_listen: None,
            mqtts_listen: None,
            https_listen: None,
        };
        let config = Config::load(&overrides).unwrap();
        // From the profile (not overridden later).
        assert_eq!(config.shards.mesh_batch_max, 32);
        assert_eq!(
            config.delivery.qos0_slow_consumer,
            SlowConsumerPolicy::DropOldest
        );
        // The config file beats the profile (latency sets inflight_max = 32).
        assert_eq!(config.limits.inflight_max, 7);
        // Flags beat the config file.
        assert_eq!(config.listeners.mqtt, "127.0.0.1:2883".parse().unwrap());
        assert_eq!(config.shards.count, ShardCount::Fixed(2));
        assert_eq!(config.shard_count(), 2);
        assert_eq!(config.listeners.placement, Placement::RoundRobin);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/ringmq-test-data"));
        // Untouched knobs keep the default.
        assert_eq!(config.listeners.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.limits.topic_levels_max, 32);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn unknown_key_error_names_key_and_file() {
        let dir = scratch_dir("unknown");
        let path = dir.join("typo.toml");
        std::fs::write(&path, "[limits]\ninflight_maxx = 10\n").unwrap();
        let error = Config::load(&ServeOverrides {
            config: Some(path.clone()),
            ..ServeOverrides::default()
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("limits.inflight_maxx"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("inflight_max"), "{message}");

        std::fs::write(&path, "[limitz]\ninflight_max = 10\n").unwrap();
        let error = load_profile(path.to_str().unwrap()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("`limitz`"), "{message}");
        assert!(message.contains("profile file"), "{message}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn wrong_types_and_shapes_name_the_file() {
        let dir = scratch_dir("types");
        let path = dir.join("bad.toml");
        for (text, expected) in [
            ("[limits]\ninflight_max = \"many\"\n", "inflight_max"),
            (
                "[delivery]\nqos0_slow_consumer = \"drop-everything\"\n",
                "drop-everything",
            ),
            ("limits = 3\n", "`limits` must be a table"),
            ("[listeners.mqtt]\nport = 1\n", "single value"),
            ("[shards]\ncount = \"many\"\n", "auto"),
            ("[listeners]\nmqtt = \"not an address\"\n", "address"),
            ("[limits\n", "bad.toml"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Config::load(&ServeOverrides {
                config: Some(path.clone()),
                ..ServeOverrides::default()
            })
            .unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, ConfigError::Parse { .. }),
                "{text}: {message}"
            );
            assert!(message.contains("bad.toml"), "{text}: {message}");
            assert!(message.contains(expected), "{text}: {message}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn invalid_values_are_rejected_with_the_key() {
        /// Breaks one knob of a valid configuration.
        type Mutation = fn(&mut Config);
        let cases: &[(Mutation, &str)] = &[
            (
                |c| c.limits.inflight_max = 0,
                "limits.inflight_max must be between 1 and 65535",
            ),
            (|c| c.shards.count = ShardCount::Fixed(0), "shards.count"),
            (|c| c.shards.count = ShardCount::Fixed(65), "shards.count"),
            (|c| c.shards.ring_entries = 1000, "power of two"),
            (|c| c.shards.mesh_batch_max = 5000, "shards.mesh_batch_max"),
            (
                |c| c.limits.packet_size_max = 300_000_000,
                "limits.packet_size_max",
            ),
            (
                |c| c.limits.outbox_bytes_max = 1000,
                "limits.outbox_bytes_max",
            ),
            (
                |c| c.limits.keep_alive_max_secs = 0,
                "limits.keep_alive_max_secs",
            ),
            (
                |c| c.limits.client_id_bytes_max = 8,
                "limits.client_id_bytes_max",
            ),
            (
                |c| c.limits.session_expiry_max_secs = u32::MAX,
                "session_expiry",
            ),
            (|c| c.mqtt.maximum_qos = 3, "mqtt.maximum_qos"),
            (|c| c.mqtt.sys_interval_secs = 0, "mqtt.sys_interval_secs"),
            (
                |c| c.mqtt.refused_topics = vec!["a/#/b".into()],
                "refused_topics",
            ),
            (
                |c| c.mqtt.refused_topics = vec!["a+/b".into()],
                "refused_topics",
            ),
            (
                |c| c.mqtt.refused_topics = vec![String::new()],
                "refused_topics",
            ),
            (
                |c| c.delivery.read_buffer_bytes = 0,
                "delivery.read_buffer_bytes",
            ),
            (|c| c.listeners.backlog = 0, "listeners.backlog"),
            (|c| c.listeners.http = c.listeners.mqtt, "both"),
            (|c| c.data_dir = PathBuf::new(), "data_dir"),
            (
                |c| c.listeners.mqtts = OptionalAddr(Some(c.listeners.http)),
                "listeners.http and listeners.mqtts",
            ),
            (
                |c| c.listeners.https = OptionalAddr(Some("127.0.0.1:8443".parse().unwrap())),
                "tls.cert_path",
            ),
            (
                |c| c.tls.client_auth = TlsClientAuth::Required,
                "tls.client_ca_path",
            ),
            (
                |c| c.tls.handshake_timeout_ms = 0,
                "tls.handshake_timeout_ms",
            ),
        ];
        for (mutate, expected) in cases {
            let mut config = Config::embedded_default();
            mutate(&mut config);
            let error = config.validate().unwrap_err();
            assert!(matches!(error, ConfigError::Invalid(_)));
            assert!(error.to_string().contains(expected), "{error}");
        }
        // Valid edge values pass.
        let mut config = Config::embedded_default();
        config.mqtt.refused_topics = vec!["test/nosubscribe".into(), "+/x/#".into(), "#".into()];
        config.limits.topic_alias_max = 0;
        config.listeners.mqtt = "127.0.0.1:0".parse().unwrap();
        config.listeners.http = "127.0.0.1:0".parse().unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn invalid_values_in_files_fail_load() {
        let dir = scratch_dir("invalid");
        let path = dir.join("zero.toml");
        std::fs::write(&path, "[limits]\ninflight_max = 0\n").unwrap();
        let error = load_profile(path.to_str().unwrap()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: limits.inflight_max must be between 1 and 65535, got 0"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn path_profile_works_and_unknown_name_is_reported() {
        let dir = scratch_dir("path");
        let path = dir.join("site.toml");
        std::fs::write(&path, "[shards]\ncount = 3\npin_cores = false\n").unwrap();
        let config = load_profile(path.to_str().unwrap()).unwrap();
        assert_eq!(config.shards.count, ShardCount::Fixed(3));
        assert!(!config.shards.pin_cores);

        let error = load_profile("turbo").unwrap_err();
        assert!(matches!(error, ConfigError::UnknownProfile { .. }));
        assert!(error.to_string().contains("small-device-fleet"), "{error}");

        // Looks like a path (ends in .toml), so it is read and the read fails.
        let error = load_profile("missing.toml").unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn to_toml_round_trips_through_a_layer() {
        for (name, _) in embedded_profiles() {
            let config = load_profile(name).unwrap();
            let text = config.to_toml();
            let dir = scratch_dir(&format!("roundtrip-{name}"));
            let path = dir.join("effective.toml");
            std::fs::write(&path, &text).unwrap();
            let reloaded = Config::load(&ServeOverrides {
                config: Some(path),
                ..ServeOverrides::default()
            })
            .unwrap();
            assert_eq!(reloaded, config, "{text}");
            std::fs::remove_dir_all(dir).ok();
        }
        let mut config = Config::embedded_default();
        config.shards.count = ShardCount::Fixed(4);
        assert!(config.to_toml().contains("count = 4"));
    }

    #[test]
    fn shard_count_parses_from_text() {
        assert_eq!("auto".parse::<ShardCount>(), Ok(ShardCount::Auto));
        assert_eq!("AUTO".parse::<ShardCount>(), Ok(ShardCount::Auto));
        assert_eq!("8".parse::<ShardCount>(), Ok(ShardCount::Fixed(8)));
        assert!("0".parse::<ShardCount>().is_err());
        assert!("65".parse::<ShardCount>().is_err());
        assert!("-1".parse::<ShardCount>().is_err());
        assert!("many".parse::<ShardCount>().is_err());
    }
}
