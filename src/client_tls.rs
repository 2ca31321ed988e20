//! TLS client settings ringmq uses when it connects out (the CLI's HTTPS, a shared PostgreSQL
//! store): rustls on ring, trusting a private CA's PEM file or the public web's roots.

use std::sync::Arc;

/// The certificates of a PEM file as trust anchors; why not, as a sentence.
pub fn ca_roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("bad PEM ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate is not usable as a CA ({e})"))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(roots)
}

/// The public web's roots (webpki-roots).
pub fn public_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// Client settings trusting `roots`, on ring, without a client certificate.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_come_from_pem_certificates_only() {
        assert!(ca_roots(b"no certificate").unwrap_err().contains("no PEM"));
        let ca = rcgen::generate_simple_self_signed(vec!["h".into()]).unwrap();
        let roots = ca_roots(ca.cert.pem().as_bytes()).unwrap();
        assert_eq!(roots.len(), 1);
        assert!(client_config(roots).is_ok());
        assert!(!public_roots().is_empty());
    }
}
