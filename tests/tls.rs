//! MQTT and HTTP over TLS against a `ringmq serve` child: a CA, a server certificate (SAN
//! localhost / 127.0.0.1) and a client certificate made with rcgen for each test; a plain
//! rustls client on a std socket speaks raw MQTT 3.1.1, and a plain TCP client on the other
//! listener shows both kinds of connection share the broker.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{free_port, Broker, WAIT};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// PEM files of one test's CA, server and client.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_pki(name: &str, client_cn: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("ringmq-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("pki dir");
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ringmq test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "ringmq test server");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client_params
        .distinguished_name
        .push(DnType::CommonName, client_cn);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client cert");

    let write = |file: &str, text: String| {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write pem");
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
        dir,
    }
}

/// Starts a broker with `mqtts` and `https` on free ports; returns it and the two ports.
fn start(pki: &Pki, client_auth: &str) -> (Broker, u16, u16) {
    let mqtts = free_port();
    let https = free_port();
    let config = format!(
        "[listeners]\nmqtts = \"127.0.0.1:{mqtts}\"\nhttps = \"127.0.0.1:{https}\"\n\
         [tls]\ncert_path = {:?}\nkey_path = {:?}\nclient_ca_path = {:?}\nclient_auth = {client_auth:?}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    (Broker::start_with_config(&config), mqtts, https)
}

fn client_config(pki: &Pki, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).expect("ca") {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = if with_cert {
        let chain = CertificateDer::pem_file_iter(&pki.client_cert)
            .expect("client cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("client pem");
        let key = PrivateKeyDer::from_pem_file(&pki.client_key).expect("client key");
        builder
            .with_client_auth_cert(chain, key)
            .expect("client auth")
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(port: u16, config: Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client connection");
    rustls::StreamOwned::new(conn, tcp)
}

fn mqtt_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "test packets are small");
    let mut out = vec![kind, body.len() as u8];
    out.extend_from_slice(body);
    out
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    mqtt_string(&mut body, client_id);
    packet(0x10, &body)
}

fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    mqtt_string(&mut body, filter);
    body.push(0);
    packet(0x82, &body)
}

fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// Reads one small packet (remaining length < 128).
fn read_packet(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let mut body = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut body)?;
    let mut out = head.to_vec();
    out.extend(body);
    Ok(out)
}

fn mqtt_login(stream: &mut (impl Read + Write), client_id: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(&connect_packet(client_id))?;
    stream.flush()?;
    read_packet(stream)
}

fn plain_client(broker: &Broker, client_id: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", broker.port)).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let ack = mqtt_login(&mut tcp, client_id).expect("connack");
    assert_eq!(ack, [0x20, 2, 0, 0]);
    tcp
}

#[test]
fn mqtt_over_tls_reaches_plain_tcp_clients_and_back() {
    let pki = make_pki("mqtt", "device-1");
    let (broker, mqtts, _) = start(&pki, "none");

    let mut secure = tls_connect(mqtts, client_config(&pki, false));
    let ack = mqtt_login(&mut secure, "tls-sub").expect("connack over TLS");
    assert_eq!(ack, [0x20, 2, 0, 0], "{}", broker.log_tail());
    secure.write_all(&subscribe_packet("tls/in")).expect("sub");
    assert_eq!(
        read_packet(&mut secure).expect("suback"),
        [0x90, 3, 0, 1, 0]
    );

    // Plain TCP publisher -> TLS subscriber (the next connection lands on the other shard).
    let mut plain = plain_client(&broker, "tcp-pub");
    plain
        .write_all(&publish_packet("tls/in", b"to tls"))
        .expect("publish");
    assert_eq!(
        read_packet(&mut secure).expect("delivery over TLS"),
        publish_packet("tls/in", b"to tls")
    );

    // TLS publisher -> plain TCP subscriber, with a payload larger than one TLS read chunk.
    plain.write_all(&subscribe_packet("tls/out")).expect("sub");
    assert_eq!(read_packet(&mut plain).expect("suback"), [0x90, 3, 0, 1, 0]);
    for i in 0..50u8 {
        secure
            .write_all(&publish_packet("tls/out", &[i; 100]))
            .expect("publish over TLS");
    }
    for i in 0..50u8 {
        assert_eq!(
            read_packet(&mut plain).expect("delivery over TCP"),
            publish_packet("tls/out", &[i; 100])
        );
    }
}

#[test]
fn https_serves_healthz() {
    let pki = make_pki("https", "device-2");
    let (broker, _, https) = start(&pki, "none");
    let mut stream = tls_connect(https, client_config(&pki, false));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = Vec::new();
    // The broker may close without close_notify after a `Connection: close` answer.
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{text}\n{}",
        broker.log_tail()
    );
    assert!(text.ends_with("ok\n"), "{text}");
}

fn handshake_and_connack(port: u16, config: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let mut stream = tls_connect(port, config);
    mqtt_login(&mut stream, "mtls").map_err(|error| error.to_string())
}

#[test]
fn required_client_certificates() {
    let pki = make_pki("mtls", "device-3");
    let (broker, mqtts, _) = start(&pki, "required");
    // Without a certificate: the handshake fails (TLS 1.3 clients may only see it on the first
    // read), and no CONNACK ever arrives.
    let refused = handshake_and_connack(mqtts, client_config(&pki, false));
    assert!(refused.is_err(), "got {refused:?}");
    // With one: connected (no username; the CN names no user, so the loopback anonymous rule
    // admits it).
    let ack = handshake_and_connack(mqtts, client_config(&pki, true)).expect("connack");
    assert_eq!(ack, [0x20, 2, 0, 0], "{}", broker.log_tail());
}

fn start_expecting_failure(config: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("serve")
        .arg("--mqtt-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--mqtts-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ringmq");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn bad_certificate_files_stop_the_start() {
    let pki = make_pki("bad", "device-4");
    let other = make_pki("bad-other", "device-5");
    let cases = [
        (
            format!(
                "[tls]\ncert_path = {:?}\nkey_path = {:?}\n",
                pki.server_cert, other.server_key
            ),
            "does not match",
        ),
        (
            format!(
                "[tls]\ncert_path = {:?}\nkey_path = {:?}\n",
                pki.dir.join("missing.pem"),
                pki.server_key
            ),
            "missing.pem",
        ),
        (
            format!(
                "[tls]\ncert_path = {:?}\nkey_path = {:?}\n",
                pki.server_key, pki.server_key
            ),
            "no PEM certificate",
        ),
        ("".to_owned(), "tls.cert_path"),
    ];
    for (config, expected) in cases {
        let (ok, text) = start_expecting_failure(&config, &pki.dir);
        assert!(!ok, "started with {config}");
        assert!(text.contains(expected), "want {expected:?} in:\n{text}");
    }
    drop(other);
}
