//! TLS settings: rustls on ring, the broker's own stack, built once per run from the
//! command line and shared by every connection.
//!
//! - `--ca PEM` is the only trust anchor (no system roots: a benchmark should know whom it
//!   trusts). Without it, `--insecure` must be given: chain and host name are then not
//!   checked, but the handshake signature still is, so a handshake costs what a verifying
//!   client's would (minus the chain walk).
//! - `--cert PEM --key PEM` present a client certificate (mutual TLS).
//! - `--sni NAME` sets the name sent and verified; by default the host given with `-h`
//!   (an IP address is verified against the certificate's IP entries and sends no SNI).
//! - Session resumption is off unless `--tls-resume`: every connect is a full handshake, which
//!   is what "handshakes per second" means. With it, TLS 1.3 tickets go to a pool of up to
//!   [`TICKETS_MAX`] per server (rustls' own cache keeps 8, too few for a storm of a thousand
//!   connects in flight, each taking one).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme};

/// TLS 1.3 session tickets kept per server with `--tls-resume`.
pub const TICKETS_MAX: usize = 4096;

/// The TLS flags of a client scenario.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// Skip certificate verification.
    pub insecure: bool,
    /// Client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    pub key: Option<PathBuf>,
    /// Resume sessions instead of a full handshake per connection.
    pub resume: bool,
}

/// The crypto provider every TLS config here uses: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read the file", path.display()))
}

/// The certificates of a PEM file (at least one).
pub fn load_certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_file(flag, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("{flag} {}: bad PEM: {error}", path.display()))?;
    ensure!(
        !certificates.is_empty(),
        "{flag} {}: no certificate in it (expected PEM with -----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(flag: &str, path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_file(flag, path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => bail!(
            "{flag} {}: no private key in it (expected PEM with -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        ),
        Err(error) => bail!("{flag} {}: bad PEM: {error}", path.display()),
    }
}

/// The client TLS configuration for a run.
pub fn client_config(options: &TlsOptions) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version")?;
    let builder = match (&options.ca, options.insecure) {
        (Some(_), true) => bail!("--ca and --insecure exclude each other"),
        (Some(path), false) => {
            let mut roots = RootCertStore::empty();
            for (index, certificate) in load_certificates("--ca", path)?.into_iter().enumerate() {
                roots.add(certificate).map_err(|error| {
                    anyhow!(
                        "--ca {}: certificate #{} is not usable as a trust anchor: {error}",
                        path.display(),
                        index + 1
                    )
                })?;
            }
            builder.with_root_certificates(roots)
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(Arc::clone(&provider)))),
        (None, false) => bail!(
            "--tls needs --ca PEM (the CA that signed the broker's certificate), or --insecure \
             to skip certificate verification (self-signed test brokers only)"
        ),
    };
    let mut config = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let chain = load_certificates("--cert", cert)?;
            let key_der = load_key("--key", key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|error| {
                    anyhow!(
                        "--cert {} / --key {}: {error} (is the key the certificate's?)",
                        cert.display(),
                        key.display()
                    )
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => bail!("--cert needs --key (the client certificate's private key)"),
        (None, Some(_)) => bail!("--key needs --cert (the client certificate)"),
    };
    config.resumption = if options.resume {
        Resumption::store(Arc::new(TicketPool::default()))
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// The server TLS configuration of the sink: its certificate, and client certificates
/// required and checked against `client_ca` when given.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in load_certificates("--ca", path)? {
                roots
                    .add(certificate)
                    .map_err(|error| anyhow!("--ca {}: {error}", path.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|error| anyhow!("--ca {}: {error}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = load_certificates("--cert", cert)?;
    let key_der = load_key("--key", key)?;
    let config = builder.with_single_cert(chain, key_der).map_err(|error| {
        anyhow!(
            "--cert {} / --key {}: {error} (is the key the certificate's?)",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// The name to send as SNI and to verify the certificate against: `--sni`, else the host.
pub fn server_name(sni: Option<&str>, host: &str) -> anyhow::Result<ServerName<'static>> {
    let name = sni.unwrap_or(host);
    ServerName::try_from(name.to_owned()).map_err(|_| {
        anyhow!("{name:?} is neither a DNS name nor an IP address (set the TLS name with --sni)")
    })
}

/// What a connection negotiated, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519`.
pub fn describe(connection: &rustls::Connection) -> String {
    let version = connection
        .protocol_version()
        .map_or_else(|| "?".to_owned(), |version| format!("{version:?}"));
    let suite = connection
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_owned(), |suite| format!("{:?}", suite.suite()));
    let group = connection
        .negotiated_key_exchange_group()
        .map_or_else(|| "?".to_owned(), |group| format!("{:?}", group.name()));
    format!("{version} {suite} {group}")
}

/// Whether a connection resumed a session instead of a full handshake.
pub fn resumed(connection: &rustls::Connection) -> bool {
    connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// What `--tls-resume` keeps of one server.
#[derive(Debug, Default)]
struct Sessions {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// The session store of `--tls-resume`: every TLS 1.3 ticket received, up to [`TICKETS_MAX`]
/// per server (the oldest go first), each used once.
#[derive(Debug, Default)]
struct TicketPool(Mutex<HashMap<ServerName<'static>, Sessions>>);

impl TicketPool {
    fn with<T>(&self, name: &ServerName<'_>, action: impl FnOnce(&mut Sessions) -> T) -> T {
        let mut servers = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        action(servers.entry(name.to_owned()).or_default())
    }
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with(&server_name, |sessions| sessions.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(server_name, |sessions| sessions.kx_hint)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(&server_name, |sessions| sessions.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(server_name, |sessions| sessions.tls12.clone())
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with(server_name, |sessions| sessions.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with(&server_name, |sessions| {
            if sessions.tls13.len() == TICKETS_MAX {
                sessions.tls13.pop_front();
            }
            sessions.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.with(server_name, |sessions| sessions.tls13.pop_back())
    }
}

/// `--insecure`: accepts any certificate for any name, but still checks that the handshake
/// was signed by the certificate's key (so the work per handshake is realistic).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, as PEM
    /// files in a fresh directory.
    pub struct TestPki {
        pub dir: PathBuf,
        pub ca: PathBuf,
        pub server_cert: PathBuf,
        pub server_key: PathBuf,
        pub client_cert: PathBuf,
        pub client_key: PathBuf,
    }

    impl TestPki {
        pub fn new(name: &str) -> TestPki {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
            let dir = std::env::temp_dir().join(format!(
                "ringmq-loadgen-{name}-{}-{:x}",
                std::process::id(),
                crate::payload::new_run_id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).unwrap();
            let server_key = KeyPair::generate().unwrap();
            let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            server_params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
            let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
            let client_key = KeyPair::generate().unwrap();
            let client = CertificateParams::new(vec!["device-1".to_owned()])
                .unwrap()
                .signed_by(&client_key, &ca, &ca_key)
                .unwrap();
            let write = |file: &str, text: String| {
                let path = dir.join(file);
                std::fs::write(&path, text).unwrap();
                path
            };
            TestPki {
                ca: write("ca.pem", ca.pem()),
                server_cert: write("server.pem", server.pem()),
                server_key: write("server.key", server_key.serialize_pem()),
                client_cert: write("client.pem", client.pem()),
                client_key: write("client.key", client_key.serialize_pem()),
                dir,
            }
        }
    }

    impl Drop for TestPki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn message(result: anyhow::Result<Arc<rustls::ClientConfig>>) -> String {
        format!("{:#}", result.unwrap_err())
    }

    #[test]
    fn builds_verifying_mutual_and_insecure_configs() {
        let pki = TestPki::new("tls-ok");
        let verifying = client_config(&TlsOptions {
            ca: Some(pki.ca.clone()),
            ..TlsOptions::default()
        })
        .unwrap();
        assert!(!verifying.client_auth_cert_resolver.has_certs());
        let mutual = client_config(&TlsOptions {
            ca: Some(pki.ca.clone()),
            cert: Some(pki.client_cert.clone()),
            key: Some(pki.client_key.clone()),
            ..TlsOptions::default()
        })
        .unwrap();
        assert!(mutual.client_auth_cert_resolver.has_certs());
        client_config(&TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        })
        .unwrap();
        server_config(&pki.server_cert, &pki.server_key, Some(&pki.ca)).unwrap();
    }

    #[test]
    fn refuses_missing_trust_and_conflicting_flags() {
        assert!(message(client_config(&TlsOptions::default())).contains("--insecure"));
        let pki = TestPki::new("tls-flags");
        let both = client_config(&TlsOptions {
            ca: Some(pki.ca.clone()),
            insecure: true,
            ..TlsOptions::default()
        });
        assert!(message(both).contains("exclude"));
        let no_key = client_config(&TlsOptions {
            ca: Some(pki.ca.clone()),
            cert: Some(pki.client_cert.clone()),
            ..TlsOptions::default()
        });
        assert!(message(no_key).contains("--cert needs --key"));
    }

    #[test]
    fn bad_pem_files_are_named() {
        let pki = TestPki::new("tls-bad");
        let missing = client_config(&TlsOptions {
            ca: Some(pki.dir.join("nowhere.pem")),
            ..TlsOptions::default()
        });
        let text = message(missing);
        assert!(
            text.contains("nowhere.pem") && text.contains("cannot read"),
            "{text}"
        );
        let garbage = pki.dir.join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let text = message(client_config(&TlsOptions {
            ca: Some(garbage.clone()),
            ..TlsOptions::default()
        }));
        assert!(text.contains("no certificate"), "{text}");
        let broken = pki.dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = message(client_config(&TlsOptions {
            ca: Some(broken),
            ..TlsOptions::default()
        }));
        assert!(text.contains("bad PEM"), "{text}");
        // A certificate where the key belongs: no private key in it.
        let text = message(client_config(&TlsOptions {
            ca: Some(pki.ca.clone()),
            cert: Some(pki.client_cert.clone()),
            key: Some(pki.client_cert.clone()),
            ..TlsOptions::default()
        }));
        assert!(text.contains("no private key"), "{text}");
        // Another certificate's key.
        let text = message(client_config(&TlsOptions {
            ca: Some(pki.ca.clone()),
            cert: Some(pki.client_cert.clone()),
            key: Some(pki.server_key.clone()),
            ..TlsOptions::default()
        }));
        assert!(text.contains("is the key the certificate's"), "{text}");
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name(None, "127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(Some("broker.example"), "127.0.0.1").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name(Some("bad name!"), "127.0.0.1").is_err());
    }
}
