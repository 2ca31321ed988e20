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
//!
//! - `sections`: one type per TOML table (`[listeners]`, `[limits]`, …) and their value types.
//! - `load`: the layering: profiles and files merged key by key, flags last.
//! - `validate`: ranges and cross-field checks on the merged result.

mod load;
mod sections;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use sections::{
    Anonymous, Auth, Cluster, Control, Delivery, Durability, DurabilityMode, HttpOptions, Limits,
    Listeners, MqttOptions, OptionalAddr, OrgLimits, Placement, ShardCount, Shards,
    SlowConsumerPolicy, Tls, TlsClientAuth,
};
pub use validate::redact;

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
    /// What survives a restart: retained messages, persistent sessions.
    #[serde(default)]
    pub durability: Durability,
    /// Nodes of a cluster meeting on NATS (off unless `cluster.nats` is set).
    #[serde(default)]
    pub cluster: Cluster,
    /// Where the control plane lives: SQLite in `data_dir`, or PostgreSQL shared by a cluster.
    #[serde(default)]
    pub control: Control,
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
    /// `--durability`: overrides `durability.mode`.
    pub durability: Option<DurabilityMode>,
    /// `--repair`: sets `durability.repair`.
    pub repair: bool,
    /// `--cluster`: overrides `cluster.nats`.
    pub cluster: Option<String>,
    /// `--node-id`: overrides `cluster.node_id`.
    pub node_id: Option<String>,
    /// `--store`: overrides `control.store`.
    pub store: Option<String>,
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

#[cfg(test)]
mod tests;
