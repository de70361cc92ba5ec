//! HTTPS listeners (`listeners[].tls`) whose certificates can change without a restart.
//!
//! Pingora's rustls acceptor is built once, when the listener starts, but it accepts a rustls
//! certificate resolver (`TlsSettings::set_cert_resolver`), asked for the certificate on every
//! handshake. [`CertStore`] is that resolver: it hands out the current certificate and key, and a
//! reload swaps them atomically. New handshakes get the new certificate; connections already open
//! (HTTP/1.1 keep-alive, HTTP/2) keep the one they negotiated and are not interrupted.

use crate::config::server::ListenerTls;
use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use std::sync::Arc;

/// Read and check a listener's certificate chain and private key (PEM): both readable, at least one
/// certificate, a private key (PKCS#8, PKCS#1 or SEC1) that matches the leaf certificate.
pub fn load(tls: &ListenerTls) -> Result<CertifiedKey, String> {
    for (what, path) in [("cert", &tls.cert), ("key", &tls.key)] {
        std::fs::metadata(path)
            .and_then(|_| std::fs::File::open(path))
            .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    }
    let (cert, key) = (tls.cert.to_string_lossy(), tls.key.to_string_lossy());
    let (chain, private) = pingora::tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| format!("cannot parse {cert} or {key} as PEM: {e}"))?
        .ok_or_else(|| format!("{cert} has no PEM certificate, or {key} has no PEM private key"))?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider is installed".to_string())?;
    CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| format!("{key} does not fit {cert}: {e}"))
}

/// The certificate a TLS listener presents, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(tls: &ListenerTls) -> Result<CertStore, String> {
        Ok(CertStore {
            current: ArcSwap::from_pointee(load(tls)?),
        })
    }

    /// Present `key` on the handshakes from now on.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
