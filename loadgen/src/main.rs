//! `ringmq-loadgen`: a thread-per-core MQTT load generator.
//!
//! Layout: `cli` (flags), `run` (the main thread: phases, progress, report), `worker` (what
//! each io_uring thread runs: connections, publishers, subscribers), `client` (the client side
//! of MQTT on the broker's codec), `control` (phases and wake-ups), `payload` (the header each
//! message carries), `tracker` (loss/duplicate/reorder detection), `template` (`%i` topics),
//! `metrics` (HDR histograms), `report` (table, JSON, HTML), `sink` (the null-sink server),
//! `transport` (TLS and WebSocket under MQTT), `tls` (rustls settings from the flags), `ws`
//! (WebSocket handshake and frames).
//!
//! ## TLS and WebSocket
//!
//! `--tls` speaks MQTT over TLS (rustls on ring, driven by hand over the io_uring socket),
//! `--ws` MQTT over WebSocket, both together wss. `--ca PEM` is the only trust anchor;
//! `--insecure` skips certificate checks for self-signed test brokers; `--cert`/`--key` present
//! a client certificate; `--sni` names the server; `--tls-resume` resumes sessions (by default
//! every connect is a full handshake, so `conn --tls` measures handshakes per second);
//! `--ws-path` is the endpoint (default `/mqtt`). The default port follows the transport:
//! 1883, 8883 (TLS), 8083 (WebSocket), 8084 (both). `sink --tls --cert --key [--ca] [--ws]`
//! serves the same transports, to measure the loadgen's own cost.

mod cli;
mod client;
mod control;
mod metrics;
mod payload;
mod report;
mod run;
mod sink;
mod template;
mod tls;
mod tracker;
mod transport;
mod worker;
mod ws;

use clap::Parser;
use ringmq_proto::mqtt::{ProtocolVersion, QoS};

use crate::cli::{Cli, Command, ConnectionArgs, LoadArgs};
use crate::client::ClientConfig;
use crate::metrics::LatencyKind;
use crate::run::{Ending, Output, Timing};
use crate::transport::{TlsClient, Transport, WsClient};
use crate::worker::{Delivery, Plan};

fn main() {
    let cli = Cli::parse();
    let code = match execute(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringmq-loadgen: {error:#}");
            1
        }
    };
    std::process::exit(code);
}

fn qos(value: u8) -> QoS {
    QoS::from_u8(value).unwrap_or(QoS::AtMostOnce)
}

fn client_config(args: &ConnectionArgs) -> anyhow::Result<ClientConfig> {
    let version = match args.mqtt_version {
        3 => ProtocolVersion::V31,
        4 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    };
    let port = args
        .port
        .unwrap_or_else(|| cli::default_port(args.tls, args.ws));
    Ok(ClientConfig {
        broker: run::resolve(&args.host, port)?,
        sub_broker: args
            .sub_port
            .map(|port| run::resolve(&args.host, port))
            .transpose()?,
        version,
        username: args.username.clone(),
        password: args.password.clone(),
        clean: !args.persistent,
        session_expiry: args.session_expiry,
        keepalive: args.keepalive,
        source_addresses: args.ifaddr.clone(),
        transport: transport(args, port)?,
    })
}

/// The transport the flags ask for; PEM files are read and checked here, before any
/// connection, so a bad one stops the run with its name.
fn transport(args: &ConnectionArgs, port: u16) -> anyhow::Result<Transport> {
    let tls = if args.tls {
        let options = tls::TlsOptions {
            ca: args.ca.clone(),
            insecure: args.insecure,
            cert: args.cert.clone(),
            key: args.key.clone(),
            resume: args.tls_resume,
        };
        Some(TlsClient {
            config: tls::client_config(&options)?,
            server_name: tls::server_name(args.sni.as_deref(), &args.host)?,
        })
    } else {
        None
    };
    let ws = if args.ws {
        let path = args.ws_path.clone().unwrap_or_else(|| "/mqtt".to_owned());
        anyhow::ensure!(
            path.starts_with('/') && path.bytes().all(|byte| byte.is_ascii_graphic()),
            "--ws-path {path:?} must start with / and hold no spaces or control characters"
        );
        let host = if args.host.contains(':') {
            format!("[{}]:{port}", args.host)
        } else {
            format!("{}:{port}", args.host)
        };
        Some(WsClient { path, host })
    } else {
        None
    };
    Ok(Transport { tls, ws })
}

/// A plan with no clients yet; each scenario fills in its shape.
fn base_plan(scenario: &'static str, args: &ConnectionArgs) -> anyhow::Result<Plan> {
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    anyhow::ensure!(args.connect_rate >= 1, "--connect-rate must be at least 1");
    let run_id = payload::new_run_id();
    // Ids unique per run, so a lingering session of an earlier run is never taken over.
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("rlg{:08x}", run_id));
    Ok(Plan {
        scenario,
        client: client_config(args)?,
        prefix,
        threads: args.threads,
        connect_rate: args.connect_rate,
        idle_clients: 0,
        subscribers: 0,
        filter: String::new(),
        sub_qos: QoS::AtMostOnce,
        publishers: 0,
        topic: String::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        payload_bytes: payload::HEADER_BYTES,
        rate_per_publisher: None,
        inflight: 1,
        count: None,
        delivery: Delivery::Nobody,
        latency: None,
        run_id,
        accept_run: Some(run_id),
    })
}

/// Adds publishers with the load flags.
fn with_load(
    mut plan: Plan,
    load: &LoadArgs,
    publishers: usize,
    topic: &str,
) -> anyhow::Result<Plan> {
    anyhow::ensure!(load.duration > 0.0, "--duration must be positive");
    anyhow::ensure!(
        load.warmup >= 0.0 && load.drain >= 0.0,
        "--warmup and --drain must not be negative"
    );
    if let Some(rate) = load.rate.or(load.rate_total) {
        anyhow::ensure!(rate > 0.0, "rates must be positive");
    }
    plan.publishers = publishers;
    plan.topic = topic.to_owned();
    plan.qos = qos(load.qos);
    plan.retain = load.retain;
    plan.payload_bytes = payload::effective_size(load.size);
    plan.rate_per_publisher = load.rate.or_else(|| {
        load.rate_total
            .map(|total| total / publishers.max(1) as f64)
    });
    plan.inflight = load.inflight;
    plan.count = load.count;
    Ok(plan)
}

fn timing(load: &LoadArgs) -> Timing {
    Timing {
        warmup: load.warmup,
        duration: load.duration,
        drain: load.drain,
    }
}

fn with_subscribers(
    mut plan: Plan,
    subscribers: usize,
    filter: String,
    sub_qos: Option<u8>,
    delivery: Delivery,
) -> Plan {
    plan.subscribers = subscribers;
    plan.filter = filter;
    plan.sub_qos = sub_qos.map_or(plan.qos, qos);
    plan.delivery = if subscribers == 0 {
        Delivery::Nobody
    } else {
        delivery
    };
    plan.latency = Some(LatencyKind::EndToEnd);
    plan
}

fn execute(cli: Cli) -> anyhow::Result<i32> {
    let (plan, ending, args, broker_pid) = match cli.command {
        Command::Sink(args) => return sink::run(&args),
        Command::Conn(args) => {
            let mut plan = base_plan("conn", &args.connection)?;
            plan.idle_clients = args.count;
            plan.latency = Some(LatencyKind::Connack);
            (
                plan,
                Ending::Hold(args.hold),
                args.connection,
                args.broker_pid,
            )
        }
        Command::Pub(args) => {
            let plan = with_load(
                base_plan("pub", &args.connection)?,
                &args.load,
                args.clients,
                &args.topic,
            )?;
            let mut plan = plan;
            if plan.qos != QoS::AtMostOnce {
                plan.latency = Some(LatencyKind::PublishAck);
            }
            (
                plan,
                Ending::Publish(timing(&args.load)),
                args.connection,
                None,
            )
        }
        Command::Sub(args) => {
            let mut plan = base_plan("sub", &args.connection)?;
            plan.subscribers = args.clients;
            plan.filter = args.topic.clone();
            plan.sub_qos = qos(args.qos);
            plan.delivery = Delivery::Unknown;
            plan.accept_run = None;
            plan.latency = Some(LatencyKind::EndToEnd);
            (plan, Ending::Hold(args.duration), args.connection, None)
        }
        Command::Fanin(args) => {
            let plan = with_load(
                base_plan("fanin", &args.connection)?,
                &args.load,
                args.pubs,
                &args.topic,
            )?;
            let plan = with_subscribers(
                plan,
                args.subs,
                args.filter.clone(),
                args.sub_qos,
                Delivery::AllPublishers,
            );
            (
                plan,
                Ending::Publish(timing(&args.load)),
                args.connection,
                None,
            )
        }
        Command::Fanout(args) => {
            let plan = with_load(
                base_plan("fanout", &args.connection)?,
                &args.load,
                args.pubs,
                &args.topic,
            )?;
            let plan = with_subscribers(
                plan,
                args.subs,
                args.filter.clone(),
                args.sub_qos,
                Delivery::AllPublishers,
            );
            (
                plan,
                Ending::Publish(timing(&args.load)),
                args.connection,
                None,
            )
        }
        Command::P2p(args) => {
            let plan = with_load(
                base_plan("p2p", &args.connection)?,
                &args.load,
                args.pairs,
                &args.topic,
            )?;
            let plan = with_subscribers(
                plan,
                args.pairs,
                args.topic.clone(),
                args.sub_qos,
                Delivery::OwnPair,
            );
            (
                plan,
                Ending::Publish(timing(&args.load)),
                args.connection,
                None,
            )
        }
        Command::Shared(args) => {
            let plan = with_load(
                base_plan("shared", &args.connection)?,
                &args.load,
                args.pubs,
                &args.topic,
            )?;
            let filter = format!("$share/{}/{}", args.group, args.filter);
            let plan =
                with_subscribers(plan, args.subs, filter, args.sub_qos, Delivery::OneOfGroup);
            (
                plan,
                Ending::Publish(timing(&args.load)),
                args.connection,
                None,
            )
        }
    };
    let output = Output::from_args(&args);
    run::run(plan, ending, &output, broker_pid, &args.cpus)
}
