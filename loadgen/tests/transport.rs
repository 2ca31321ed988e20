//! End to end over TLS and WebSocket against the bundled null sink: QoS 1 publishes over TLS,
//! over WebSocket, and over WebSocket on mutual TLS must all be acknowledged; a missing client
//! certificate, a wrong CA, and a plain client on a TLS port must fail with messages that say
//! why.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ringmq-loadgen");

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files; plus a
/// second CA that signed nothing here.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let dir =
            std::env::temp_dir().join(format!("ringmq-loadgen-it-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            (params.self_signed(&key).unwrap(), key)
        };
        let (ca_cert, ca_key) = ca("test CA");
        let (other_ca, _) = ca("other CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let server = params.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["device-1".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca_cert, &ca_key)
            .unwrap();
        for (file, text) in [
            ("ca.pem", ca_cert.pem()),
            ("other-ca.pem", other_ca.pem()),
            ("server.pem", server.pem()),
            ("server.key", server_key.serialize_pem()),
            ("client.pem", client.pem()),
            ("client.key", client_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sink on a free port with `flags`, killed on drop.
struct Sink {
    child: Child,
    port: String,
}

impl Sink {
    fn start(flags: &[String]) -> Sink {
        let port = free_port();
        let child = Command::new(BINARY)
            .args(["sink", "-p", &port.to_string(), "-d", "30", "--quiet"])
            .args(flags)
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sink");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sink did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sink {
            child,
            port: port.to_string(),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loadgen(args: &[String]) -> Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("run the loadgen")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// A number field of the JSON report.
fn field(report: &str, name: &str) -> f64 {
    let start = report.find(&format!("\"{name}\":")).expect(name) + name.len() + 3;
    let rest = &report[start..];
    let end = rest.find([',', '}']).expect("number end");
    rest[..end].parse().expect("number")
}

fn publish_qos1(port: &str, transport: &[String]) -> String {
    let mut args = strings(&[
        "pub", "-p", port, "-c", "4", "-q", "1", "-d", "1", "--json", "--quiet",
    ]);
    args.extend_from_slice(transport);
    let output = loadgen(&args);
    assert!(output.status.success(), "pub failed: {output:?}");
    let report = String::from_utf8(output.stdout).expect("utf-8 report");
    assert!(field(&report, "sent_total") > 100.0, "{report}");
    assert_eq!(
        field(&report, "sent_total"),
        field(&report, "acked_total"),
        "{report}"
    );
    assert_eq!(field(&report, "errors"), 0.0, "{report}");
    report
}

fn tls_server(pki: &Pki) -> Vec<String> {
    vec![
        "--tls".to_owned(),
        "--cert".to_owned(),
        pki.path("server.pem"),
        "--key".to_owned(),
        pki.path("server.key"),
    ]
}

#[test]
fn qos1_over_tls_ws_and_mutual_wss() {
    let pki = Pki::new("ok");
    let tls_client = vec!["--tls".to_owned(), "--ca".to_owned(), pki.path("ca.pem")];

    let sink = Sink::start(&tls_server(&pki));
    let report = publish_qos1(&sink.port, &tls_client);
    assert!(report.contains("\"transport\":\"TLS\""), "{report}");
    assert!(report.contains("TLSv1_3"), "{report}");
    assert_eq!(field(&report, "tls_resumed"), 0.0, "{report}");
    // --tls-resume: connections after the first few resume with tickets.
    let mut args = strings(&[
        "conn",
        "-p",
        &sink.port,
        "-c",
        "20",
        "-R",
        "50",
        "--hold",
        "0",
        "--json",
        "--quiet",
        "--tls-resume",
    ]);
    args.extend_from_slice(&tls_client);
    let output = loadgen(&args);
    assert!(output.status.success(), "conn failed: {output:?}");
    let report = String::from_utf8(output.stdout).expect("utf-8 report");
    assert!(field(&report, "tls_resumed") >= 10.0, "{report}");
    drop(sink);

    let sink = Sink::start(&strings(&["--ws"]));
    let report = publish_qos1(&sink.port, &strings(&["--ws"]));
    assert!(report.contains("\"transport\":\"WebSocket\""), "{report}");
    drop(sink);

    let mut mutual = tls_server(&pki);
    mutual.extend(["--ca".to_owned(), pki.path("ca.pem"), "--ws".to_owned()]);
    let sink = Sink::start(&mutual);
    let mut client = tls_client.clone();
    client.extend([
        "--cert".to_owned(),
        pki.path("client.pem"),
        "--key".to_owned(),
        pki.path("client.key"),
        "--ws".to_owned(),
    ]);
    let report = publish_qos1(&sink.port, &client);
    assert!(
        report.contains("\"transport\":\"WebSocket over TLS\""),
        "{report}"
    );
}

/// `conn` with `transport` against a sink: must fail, and the report must say `expected`.
fn refused(port: &str, transport: &[String], expected: &str) {
    let mut args = strings(&["conn", "-p", port, "-c", "2", "--hold", "0", "--quiet"]);
    args.extend_from_slice(transport);
    let output = loadgen(&args);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("0 ok, 2 failed"), "{report}");
    assert!(
        report.contains(expected),
        "expected {expected:?} in {report}"
    );
}

#[test]
fn failures_say_why() {
    let pki = Pki::new("refusals");
    let mut mutual = tls_server(&pki);
    mutual.extend(["--ca".to_owned(), pki.path("ca.pem")]);
    let sink = Sink::start(&mutual);
    let port = sink.port.clone();
    // No client certificate where one is required.
    refused(
        &port,
        &["--tls".to_owned(), "--ca".to_owned(), pki.path("ca.pem")],
        "tls: ",
    );
    // The broker's certificate is not signed by the CA we trust.
    refused(
        &port,
        &[
            "--tls".to_owned(),
            "--ca".to_owned(),
            pki.path("other-ca.pem"),
        ],
        "invalid peer certificate",
    );
    // Plain MQTT to a TLS port.
    refused(&port, &[], "add --tls");
    // TLS to a plain port.
    let plain = Sink::start(&[]);
    refused(
        &plain.port,
        &["--tls".to_owned(), "--insecure".to_owned()],
        "is the port a TLS listener?",
    );
    // WebSocket to a plain MQTT port.
    refused(&plain.port, &strings(&["--ws"]), "websocket: ");

    // Configuration mistakes stop the run before it connects, naming the flag.
    let output = loadgen(&strings(&["conn", "-p", &port, "--tls"]));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--insecure"));
    let missing = Path::new(&pki.dir).join("missing.pem");
    let output = loadgen(&[
        "conn".to_owned(),
        "-p".to_owned(),
        port,
        "--tls".to_owned(),
        "--ca".to_owned(),
        missing.to_string_lossy().into_owned(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}
