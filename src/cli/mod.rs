//! Command-line interface: `ringmq serve`, `ringmq config` and `ringmq profiles`, plus the
//! management API client commands in [`client`] (`ringmq users list`, `ringmq auth login`, …).
//!
//! Flags only name what an operator changes per run; everything else lives in the tuning
//! profiles and config files that `crate::config` layers underneath the flags.

pub mod client;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{DurabilityMode, Placement, ServeOverrides, ShardCount};

pub use self::client::ClientCommand;

/// The `ringmq` command line.
#[derive(Parser, Debug)]
#[command(
    name = "ringmq",
    version,
    about = "Thread-per-core io_uring MQTT broker (MQTT 3.1.1 and 5.0) with an HTTP front door",
    long_about = "ringmq is a self-hosted MQTT broker for bare-metal Linux. It runs one shard per \
core, each with its own io_uring executor, and serves MQTT 3.1.1 and 5.0 (over TCP, TLS and \
WebSocket) plus HTTP (the management API, REST publish, WebSocket and SSE streams, health and \
metrics) from the same shards.\n\n\
Configuration is layered: the embedded default tuning profile sets every knob, then \
--profile (an embedded profile or a file), then --config FILE, then the flags of `serve`. \
Run `ringmq profiles` to list the profiles and `ringmq config [FLAGS]` to print the effective \
configuration.\n\n\
The other commands (auth, users, acl, acl-sets, keys, sessions, org, orgs, token-exchange, \
publish) drive a running server's management API over HTTP; start with `ringmq auth login`."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `ringmq=debug,warn`.
    #[arg(
        long,
        global = true,
        env = "RINGMQ_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,

    /// Write logs as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker until SIGINT or SIGTERM.
    #[command(
        long_about = "Run the broker until SIGINT or SIGTERM. On a signal it stops accepting, sends \
MQTT 5 clients DISCONNECT 0x8B (server shutting down), flushes outboxes and exits 0."
    )]
    Serve(ServeArgs),
    /// Print the effective configuration (after profile, config file and flags) as TOML.
    #[command(
        long_about = "Print the effective configuration (after profile, config file and flags) as \
TOML, in the format --config accepts. Takes the same flags as `serve`; exits non-zero with the \
reason when the configuration is invalid."
    )]
    Config(ServeArgs),
    /// List the embedded tuning profiles.
    Profiles,
    /// Management API client commands.
    #[command(flatten)]
    Client(ClientCommand),
}

/// Flags shared by `serve` and `config`; each overrides the profile and config file.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeArgs {
    /// Address for MQTT over TCP [default from profile: 127.0.0.1:1883]. Use 0.0.0.0:1883 to
    /// serve the network; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,

    /// Address for HTTP: management API, REST publish, streams, MQTT over WebSocket (/mqtt),
    /// /healthz, /readyz, /metrics [default from profile: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,

    /// Address for MQTT over TLS, IP[:PORT] with port 8883 when omitted, e.g. 0.0.0.0 (needs
    /// tls.cert_path and tls.key_path in the configuration) [default from profile: off].
    #[arg(long, value_name = "ADDR", value_parser = parse_mqtts_addr)]
    pub mqtts_listen: Option<SocketAddr>,

    /// Address for HTTPS and WSS, IP[:PORT] with port 8443 when omitted (needs tls.cert_path
    /// and tls.key_path) [default from profile: off].
    #[arg(long, value_name = "ADDR", value_parser = parse_https_addr)]
    pub https_listen: Option<SocketAddr>,

    /// Number of shard threads, `auto` for one per core, or 1 to 64 [default from profile: auto].
    #[arg(long, value_name = "N|auto")]
    pub shards: Option<ShardCount>,

    /// Directory for broker state such as sessions [default from profile: ./ringmq-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Tuning profile: an embedded name (default, latency, throughput, small-device-fleet,
    /// conformance) or a path to a TOML file (contains `/` or ends in `.toml`). A partial overlay
    /// of the default profile [default: none, the default profile alone].
    #[arg(long, value_name = "NAME|PATH")]
    pub profile: Option<String>,

    /// Partial configuration file applied after the profile (same format as tuning/*.toml;
    /// unknown keys are an error).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How connections reach shards [default from profile: reuse-port].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub placement: Option<Placement>,

    /// What survives a restart: `memory` (nothing but the control plane), `periodic` (logged,
    /// synced every durability.sync_interval_ms: a crash loses at most that) or `sync`
    /// (acknowledgements wait for the sync, or a QoS 1 PUBACK for every subscriber's
    /// acknowledgement of its copy: a crash loses nothing acknowledged) [default from profile:
    /// periodic].
    #[arg(long, value_name = "MODE")]
    pub durability: Option<DurabilityMode>,

    /// Join a cluster of ringmq nodes meeting on this NATS server, e.g. nats://127.0.0.1:4222
    /// (needs --node-id; see docs/cluster.md) [default from profile: off, one node].
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,

    /// This node's name in the cluster: 1 to 64 letters, digits, `-` or `_`.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// Keep the control plane (orgs, users, keys, ACL rules) in this PostgreSQL database,
    /// shared by every node of a cluster: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE, with
    /// ?sslmode=require[&sslrootcert=CA.pem] for verified TLS [default from profile: SQLite in the
    /// data dir].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,

    /// Start even if a shard's log is damaged in the middle, dropping what follows the damage
    /// (without it, such a start stops and names the file).
    #[arg(long)]
    pub repair: bool,
}

/// IANA's port for MQTT over TLS.
const MQTTS_PORT: u16 = 8883;

/// The usual alternative HTTPS port (443 needs privileges).
const HTTPS_PORT: u16 = 8443;

/// `IP:PORT`, or a bare IP that gets `default_port`.
fn parse_addr_with_default(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("expected IP or IP:PORT, got {text:?}"))
}

fn parse_mqtts_addr(text: &str) -> Result<SocketAddr, String> {
    parse_addr_with_default(text, MQTTS_PORT)
}

fn parse_https_addr(text: &str) -> Result<SocketAddr, String> {
    parse_addr_with_default(text, HTTPS_PORT)
}

impl ServeArgs {
    /// The flags as configuration overrides for `crate::config::Config::load`.
    pub fn overrides(&self) -> ServeOverrides {
        ServeOverrides {
            mqtt_listen: self.mqtt_listen,
            http_listen: self.http_listen,
            mqtts_listen: self.mqtts_listen,
            https_listen: self.https_listen,
            shards: self.shards,
            data_dir: self.data_dir.clone(),
            placement: self.placement,
            profile: self.profile.clone(),
            config: self.config.clone(),
            durability: self.durability,
            repair: self.repair,
            cluster: self.cluster.clone(),
            node_id: self.node_id.clone(),
            store: self.store.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_with_every_flag() {
        let cli = Cli::try_parse_from([
            "ringmq",
            "serve",
            "--mqtt-listen",
            "0.0.0.0:1884",
            "--http-listen",
            "127.0.0.1:9090",
            "--mqtts-listen",
            "0.0.0.0:8884",
            "--https-listen",
            "0.0.0.0:8444",
            "--shards",
            "2",
            "--data-dir",
            "/var/lib/ringmq",
            "--profile",
            "latency",
            "--config",
            "site.toml",
            "--placement",
            "round-robin",
            "--log",
            "debug",
            "--log-json",
        ])
        .unwrap();
        assert_eq!(cli.log, "debug");
        assert!(cli.log_json);
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let overrides = args.overrides();
        assert_eq!(overrides.mqtt_listen, Some("0.0.0.0:1884".parse().unwrap()));
        assert_eq!(
            overrides.http_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert_eq!(
            overrides.mqtts_listen,
            Some("0.0.0.0:8884".parse().unwrap())
        );
        assert_eq!(
            overrides.https_listen,
            Some("0.0.0.0:8444".parse().unwrap())
        );
        assert_eq!(overrides.shards, Some(ShardCount::Fixed(2)));
        assert_eq!(overrides.data_dir, Some(PathBuf::from("/var/lib/ringmq")));
        assert_eq!(overrides.profile.as_deref(), Some("latency"));
        assert_eq!(overrides.config, Some(PathBuf::from("site.toml")));
        assert_eq!(overrides.placement, Some(Placement::RoundRobin));
    }

    #[test]
    fn serve_without_flags_overrides_nothing() {
        let cli = Cli::try_parse_from(["ringmq", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.overrides(), ServeOverrides::default());
        assert!(!cli.log_json);
    }

    #[test]
    fn config_and_profiles_subcommands() {
        let cli = Cli::try_parse_from(["ringmq", "config", "--shards", "auto"]).unwrap();
        let Command::Config(args) = cli.command else {
            panic!("expected config");
        };
        assert_eq!(args.shards, Some(ShardCount::Auto));
        let cli = Cli::try_parse_from(["ringmq", "--log", "warn", "profiles"]).unwrap();
        assert!(matches!(cli.command, Command::Profiles));
        assert_eq!(cli.log, "warn");
    }

    #[test]
    fn tls_listen_ports_default() {
        let cli = Cli::try_parse_from([
            "ringmq",
            "serve",
            "--mqtts-listen",
            "0.0.0.0",
            "--https-listen",
            "127.0.0.1:9443",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.mqtts_listen, Some("0.0.0.0:8883".parse().unwrap()));
        assert_eq!(args.https_listen, Some("127.0.0.1:9443".parse().unwrap()));
        let cli = Cli::try_parse_from(["ringmq", "serve", "--https-listen", "::1"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.https_listen, Some("[::1]:8443".parse().unwrap()));
        assert!(Cli::try_parse_from(["ringmq", "serve", "--mqtts-listen", "localhost"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["ringmq", "serve", "--shards", "0"][..],
            &["ringmq", "serve", "--shards", "65"],
            &["ringmq", "serve", "--mqtt-listen", "localhost"],
            &["ringmq", "serve", "--placement", "random"],
            &["ringmq", "serve", "--no-such-flag"],
            &["ringmq"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn help_explains_every_flag() {
        let mut command = Cli::command();
        // Building propagates the global flags (--log, --log-json) into the subcommands.
        command.build();
        let serve = command
            .find_subcommand_mut("serve")
            .expect("serve subcommand");
        let help = serve.render_long_help().to_string();
        for flag in [
            "--mqtt-listen",
            "--http-listen",
            "--mqtts-listen",
            "--https-listen",
            "--shards",
            "--data-dir",
            "--profile",
            "--config",
            "--placement",
            "reuse-port",
            "round-robin",
            "--log",
            "RINGMQ_LOG",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn overrides_load_a_valid_config() {
        let cli = Cli::try_parse_from([
            "ringmq",
            "config",
            "--profile",
            "conformance",
            "--shards",
            "2",
        ])
        .unwrap();
        let Command::Config(args) = cli.command else {
            panic!("expected config");
        };
        let config = crate::config::Config::load(&args.overrides()).unwrap();
        assert_eq!(config.shard_count(), 2);
        assert_eq!(config.limits.keep_alive_max_secs, 60);
    }
}
