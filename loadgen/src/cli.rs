//! Command line: one subcommand per scenario, with the flags load testers know from
//! emqtt-bench and mqtt-benchmark (`-h` is the host, as there; `--help` prints help).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// The `ringmq-loadgen` command line.
#[derive(Parser, Debug)]
#[command(
    name = "ringmq-loadgen",
    version,
    about = "Load generator for MQTT brokers (ringmq, mosquitto, rumqttd, EMQX, ...)",
    long_about = "Load generator for MQTT brokers. Thread-per-core on io_uring; every payload \
carries its publisher, a sequence number and a send timestamp, so the report gives end-to-end \
latency percentiles and counts lost, duplicated and reordered messages.\n\n\
TLS and WebSocket: every client scenario speaks MQTT over TCP by default, over TLS with \
--tls (--ca PEM to trust, or --insecure for self-signed test brokers; --cert/--key for mutual \
TLS; --sni), over WebSocket with --ws (--ws-path, default /mqtt), and over both (wss) with \
--tls --ws. The default port follows: 1883, 8883, 8083, 8084. Every TLS connect is a full \
handshake unless --tls-resume, so `conn --tls` measures handshakes per second. `sink` serves \
the same transports. See `ringmq-loadgen conn --help`.\n\n\
Exit code: 0 on success, 1 on connection or protocol errors, 2 when messages were lost at \
QoS 1 or 2 (a broker bug)."
)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Connection storm: open `-c` connections at `--connect-rate`, report CONNACK latency and
    /// the broker's memory per connection (with `--broker-pid`).
    #[command(disable_help_flag = true)]
    Conn(ConnArgs),
    /// Publishers only (`-c` clients publishing to `-t`), like `emqtt_bench pub`.
    #[command(disable_help_flag = true)]
    Pub(PubArgs),
    /// Subscribers only (`-c` clients subscribed to `-t`), like `emqtt_bench sub`.
    #[command(disable_help_flag = true)]
    Sub(SubArgs),
    /// N publishers to M subscribers that each receive every message (fan-in).
    #[command(disable_help_flag = true)]
    Fanin(FaninArgs),
    /// 1..P publishers to N subscribers that each receive every message (fan-out).
    #[command(disable_help_flag = true)]
    Fanout(FanoutArgs),
    /// N pairs, publisher i to subscriber i on its own topic.
    #[command(disable_help_flag = true)]
    P2p(P2pArgs),
    /// Publishers to a `$share/GROUP/...` group: each message reaches one consumer.
    #[command(disable_help_flag = true)]
    Shared(SharedArgs),
    /// A null-sink MQTT server: answers CONNECT/SUBSCRIBE/PUBLISH acks, discards messages.
    /// Proves how fast the loadgen itself can publish.
    #[command(disable_help_flag = true)]
    Sink(SinkArgs),
}

/// How clients connect (shared by every client scenario).
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,

    /// Broker host (IP address or name).
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,

    /// Broker port [default: 1883; 8883 with --tls; 8083 with --ws; 8084 with --tls --ws].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,

    /// Port the subscribers connect to instead of --port, on the same host: another node of a
    /// ringmq cluster, so every message crosses between nodes.
    #[arg(long, value_name = "PORT")]
    pub sub_port: Option<u16>,

    /// MQTT protocol level: 3 (3.1), 4 (3.1.1) or 5.
    #[arg(short = 'V', long = "mqtt-version", default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub mqtt_version: u8,

    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,

    /// Password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,

    /// Persistent sessions (clean session 0 / clean start 0) instead of clean ones.
    #[arg(long)]
    pub persistent: bool,

    /// MQTT 5 session expiry for `--persistent`, in seconds.
    #[arg(long, default_value_t = 300)]
    pub session_expiry: u32,

    /// Keep alive in seconds (idle clients send PINGREQ at half of it).
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,

    /// Client id prefix; ids are PREFIX-ROLE-INDEX (default: `rlg` and a per-run id; set it
    /// for persistent sessions that must survive across runs).
    #[arg(long)]
    pub prefix: Option<String>,

    /// Source addresses, comma separated, used round-robin (e.g. 127.0.0.1,127.0.0.2 for more
    /// than ~28k connections to one port).
    #[arg(long, value_delimiter = ',')]
    pub ifaddr: Vec<IpAddr>,

    /// New connections per second, in total.
    #[arg(short = 'R', long, default_value_t = 2000)]
    pub connect_rate: u32,

    /// Loadgen threads (each a pinned io_uring runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// CPUs to pin the threads to, e.g. `1` or `2-3` (default: the CPUs this process may use).
    #[arg(long)]
    pub cpus: Option<String>,

    /// Print the final report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also write an HTML report with SVG charts (latency percentiles, throughput over time).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// No per-second progress lines.
    #[arg(long)]
    pub quiet: bool,

    /// MQTT over TLS (rustls on ring, TLS 1.2 and 1.3). Needs --ca, or --insecure for a
    /// self-signed test broker. Every connect is a full handshake unless --tls-resume.
    #[arg(long, help_heading = TLS_AND_WS)]
    pub tls: bool,

    /// CA certificates (PEM) to trust: the broker's certificate must chain to one of them and
    /// name the host (or --sni). The system's CAs are not used.
    #[arg(long, value_name = "PEM", requires = "tls", help_heading = TLS_AND_WS)]
    pub ca: Option<PathBuf>,

    /// BENCHMARKS ONLY: accept any broker certificate for any name (the handshake signature is
    /// still checked, so a handshake costs what a verifying client's does, minus the chain).
    #[arg(long, requires = "tls", conflicts_with = "ca", help_heading = TLS_AND_WS)]
    pub insecure: bool,

    /// Client certificate chain (PEM, end-entity first) for mutual TLS; needs --key.
    #[arg(long, value_name = "PEM", requires_all = ["tls", "key"], help_heading = TLS_AND_WS)]
    pub cert: Option<PathBuf>,

    /// Private key of --cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires_all = ["tls", "cert"], help_heading = TLS_AND_WS)]
    pub key: Option<PathBuf>,

    /// TLS server name, sent as SNI and verified against the certificate [default: the host;
    /// an IP address is matched against the certificate's IP entries and sends no SNI].
    #[arg(long, value_name = "NAME", requires = "tls", help_heading = TLS_AND_WS)]
    pub sni: Option<String>,

    /// Resume TLS sessions (session tickets, kept in memory) instead of a full handshake per
    /// connection.
    #[arg(long, requires = "tls", help_heading = TLS_AND_WS)]
    pub tls_resume: bool,

    /// MQTT over WebSocket (RFC 6455, subprotocol `mqtt`, binary frames); with --tls, over
    /// TLS (wss).
    #[arg(long, help_heading = TLS_AND_WS)]
    pub ws: bool,

    /// Path of the broker's WebSocket endpoint [default: /mqtt, as ringmq and EMQX serve it;
    /// mosquitto answers on any path].
    #[arg(long, value_name = "PATH", requires = "ws", help_heading = TLS_AND_WS)]
    pub ws_path: Option<String>,
}

/// The `--help` section of the transport flags.
pub const TLS_AND_WS: &str = "TLS and WebSocket";

/// The broker port when `-p` is not given: the usual one of the transport.
pub fn default_port(tls: bool, ws: bool) -> u16 {
    match (tls, ws) {
        (false, false) => 1883,
        (true, false) => 8883,
        (false, true) => 8083,
        (true, true) => 8084,
    }
}

/// How messages are published (shared by every scenario with publishers).
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Publish QoS: 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,

    /// Payload size in bytes (at least the 24-byte header).
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,

    /// Messages per second per publisher (default: as fast as the broker takes them).
    #[arg(short = 'r', long, conflicts_with = "rate_total")]
    pub rate: Option<f64>,

    /// Messages per second in total, split evenly across publishers.
    #[arg(long)]
    pub rate_total: Option<f64>,

    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=32_768))]
    pub inflight: u16,

    /// Seconds of measurement after the warm-up.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,

    /// Messages per publisher; the run ends when all are sent (or after --duration).
    #[arg(short = 'L', long)]
    pub count: Option<u64>,

    /// Seconds of warm-up that are excluded from the results.
    #[arg(short = 'w', long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Seconds to wait after the last publish for deliveries and acks.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,

    /// Publish with the retain flag.
    #[arg(long)]
    pub retain: bool,
}

/// `conn`: connection storm.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub count: usize,
    /// Seconds to hold the connections open once all are up.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// Broker process id: its RSS is sampled before connecting and at the end of the hold to
    /// report memory per idle connection.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// `pub`: publishers only.
#[derive(Args, Debug, Clone)]
pub struct PubArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Publishing clients.
    #[arg(short = 'c', long, default_value_t = 10)]
    pub clients: usize,
    /// Topic template (`%i`: client index, `%c`: client id).
    #[arg(short = 't', long, default_value = "bench/%i")]
    pub topic: String,
}

/// `sub`: subscribers only.
#[derive(Args, Debug, Clone)]
pub struct SubArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Subscribing clients.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub clients: usize,
    /// Topic filter template (`%i`: client index).
    #[arg(short = 't', long, default_value = "bench/#")]
    pub topic: String,
    /// Subscription QoS.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Seconds to stay subscribed.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
}

/// `fanin`: many publishers, few subscribers.
#[derive(Args, Debug, Clone)]
pub struct FaninArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Publishers.
    #[arg(long, default_value_t = 100)]
    pub pubs: usize,
    /// Subscribers (each receives every message).
    #[arg(long, default_value_t = 1)]
    pub subs: usize,
    /// Publish topic template.
    #[arg(short = 't', long, default_value = "bench/fanin/%i")]
    pub topic: String,
    /// Subscription filter template.
    #[arg(long, default_value = "bench/fanin/#")]
    pub filter: String,
    /// Subscription QoS (default: the publish QoS).
    #[arg(long)]
    pub sub_qos: Option<u8>,
}

/// `fanout`: few publishers, many subscribers.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Publishers.
    #[arg(long, default_value_t = 1)]
    pub pubs: usize,
    /// Subscribers (each receives every message).
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Publish topic template.
    #[arg(short = 't', long, default_value = "bench/fanout/%i")]
    pub topic: String,
    /// Subscription filter template.
    #[arg(long, default_value = "bench/fanout/#")]
    pub filter: String,
    /// Subscription QoS (default: the publish QoS).
    #[arg(long)]
    pub sub_qos: Option<u8>,
}

/// `p2p`: pairs on their own topics.
#[derive(Args, Debug, Clone)]
pub struct P2pArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Pairs (one publisher and one subscriber each).
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub pairs: usize,
    /// Topic template shared by publisher i and subscriber i.
    #[arg(short = 't', long, default_value = "bench/p2p/%i")]
    pub topic: String,
    /// Subscription QoS (default: the publish QoS).
    #[arg(long)]
    pub sub_qos: Option<u8>,
}

/// `shared`: a shared-subscription group.
#[derive(Args, Debug, Clone)]
pub struct SharedArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Publishers.
    #[arg(long, default_value_t = 10)]
    pub pubs: usize,
    /// Consumers in the group.
    #[arg(long, default_value_t = 10)]
    pub subs: usize,
    /// Share group name.
    #[arg(long, default_value = "bench")]
    pub group: String,
    /// Publish topic template.
    #[arg(short = 't', long, default_value = "bench/shared/%i")]
    pub topic: String,
    /// Filter the group subscribes to (prefixed with `$share/GROUP/`).
    #[arg(long, default_value = "bench/shared/#")]
    pub filter: String,
    /// Subscription QoS (default: the publish QoS).
    #[arg(long)]
    pub sub_qos: Option<u8>,
}

/// `sink`: the null-sink server.
#[derive(Args, Debug, Clone)]
pub struct SinkArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Address to listen on.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 1884)]
    pub port: u16,
    /// Server threads (each a pinned io_uring runtime with its own SO_REUSEPORT listener).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// CPUs to pin the threads to.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Serve MQTT over TLS with --cert and --key (to measure the loadgen's own TLS cost).
    #[arg(long, requires_all = ["cert", "key"], help_heading = TLS_AND_WS)]
    pub tls: bool,
    /// Server certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires = "tls", help_heading = TLS_AND_WS)]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls", help_heading = TLS_AND_WS)]
    pub key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM): mutual TLS.
    #[arg(long, value_name = "PEM", requires = "tls", help_heading = TLS_AND_WS)]
    pub ca: Option<PathBuf>,
    /// Serve MQTT over WebSocket (any path); with --tls, over TLS.
    #[arg(long, help_heading = TLS_AND_WS)]
    pub ws: bool,
    /// Exit after this many seconds (default: run until killed).
    #[arg(short = 'd', long)]
    pub duration: Option<f64>,
    /// No per-second progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses a CPU list such as `0-3,8`.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let parse = |text: &str| {
            text.parse::<usize>()
                .map_err(|_| format!("bad CPU number {text:?} in {list:?}"))
        };
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (parse(first)?, parse(last)?);
                if first > last {
                    return Err(format!("bad CPU range {part:?}"));
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(parse(part)?),
        }
    }
    if cpus.is_empty() {
        return Err(format!("empty CPU list {list:?}"));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringmq-loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_pub_flags() {
        let cli = parse(&[
            "pub",
            "-h",
            "10.0.0.1",
            "-p",
            "1884",
            "-V",
            "5",
            "-c",
            "7",
            "-q",
            "1",
            "-s",
            "256",
            "-t",
            "x/%i",
            "--rate",
            "100",
            "--inflight",
            "8",
            "-d",
            "2.5",
            "--warmup",
            "1",
            "-u",
            "user",
            "-P",
            "secret",
            "--persistent",
            "--ifaddr",
            "127.0.0.1,127.0.0.2",
        ])
        .unwrap();
        let Command::Pub(args) = cli.command else {
            panic!("expected pub");
        };
        assert_eq!(args.connection.host, "10.0.0.1");
        assert_eq!(args.connection.port, Some(1884));
        assert_eq!(args.connection.mqtt_version, 5);
        assert_eq!(args.clients, 7);
        assert_eq!(args.load.qos, 1);
        assert_eq!(args.load.size, 256);
        assert_eq!(args.topic, "x/%i");
        assert_eq!(args.load.rate, Some(100.0));
        assert_eq!(args.load.inflight, 8);
        assert_eq!(args.load.duration, 2.5);
        assert_eq!(args.load.warmup, 1.0);
        assert_eq!(args.connection.username.as_deref(), Some("user"));
        assert_eq!(args.connection.password.as_deref(), Some("secret"));
        assert!(args.connection.persistent);
        assert_eq!(args.connection.ifaddr.len(), 2);
    }

    #[test]
    fn scenario_defaults() {
        let Command::Fanout(args) = parse(&["fanout"]).unwrap().command else {
            panic!("expected fanout");
        };
        assert_eq!((args.pubs, args.subs), (1, 1000));
        let Command::P2p(args) = parse(&["p2p", "-q", "1"]).unwrap().command else {
            panic!("expected p2p");
        };
        assert_eq!(args.pairs, 1000);
        assert_eq!(args.load.qos, 1);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&["pub", "-q", "3"]).is_err());
        assert!(parse(&["pub", "-V", "6"]).is_err());
        assert!(parse(&["pub", "--rate", "5", "--rate-total", "10"]).is_err());
        assert!(parse(&["conn", "--broker-pid", "x"]).is_err());
    }

    #[test]
    fn help_is_available_everywhere() {
        for command in [
            "conn", "pub", "sub", "fanin", "fanout", "p2p", "shared", "sink",
        ] {
            let error = parse(&[command, "--help"]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::DisplayHelp,
                "{command}"
            );
        }
    }

    #[test]
    fn parses_transport_flags() {
        let Command::Conn(args) = parse(&[
            "conn",
            "--tls",
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--sni",
            "broker.example",
            "--ws",
            "--ws-path",
            "/ws",
        ])
        .unwrap()
        .command
        else {
            panic!("expected conn");
        };
        let connection = args.connection;
        assert!(connection.tls && connection.ws);
        assert_eq!(connection.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(connection.sni.as_deref(), Some("broker.example"));
        assert_eq!(connection.ws_path.as_deref(), Some("/ws"));
        assert_eq!(connection.port, None);
        let Command::Pub(args) = parse(&["pub"]).unwrap().command else {
            panic!("expected pub");
        };
        assert!(!args.connection.tls && !args.connection.ws);
        assert_eq!(args.connection.ws_path, None);
        assert!(parse(&["pub", "--ws-path", "/x"]).is_err());
        assert_eq!(default_port(false, false), 1883);
        assert_eq!(default_port(true, false), 8883);
        assert_eq!(default_port(false, true), 8083);
        assert_eq!(default_port(true, true), 8084);
    }

    #[test]
    fn transport_flags_need_their_companions() {
        // TLS settings without --tls.
        assert!(parse(&["conn", "--ca", "ca.pem"]).is_err());
        assert!(parse(&["conn", "--insecure"]).is_err());
        assert!(parse(&["conn", "--sni", "x"]).is_err());
        // A certificate without its key, and the other way round.
        assert!(parse(&["conn", "--tls", "--insecure", "--cert", "c.pem"]).is_err());
        assert!(parse(&["conn", "--tls", "--insecure", "--key", "k.pem"]).is_err());
        // Trust a CA or trust anything, not both.
        assert!(parse(&["conn", "--tls", "--insecure", "--ca", "ca.pem"]).is_err());
        // The sink needs a certificate to serve TLS.
        assert!(parse(&["sink", "--tls"]).is_err());
        assert!(parse(&["sink", "--tls", "--cert", "c.pem", "--key", "k.pem", "--ws"]).is_ok());
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
