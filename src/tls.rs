//! TLS for both directions: the client config used to reach an HTTPS upstream
//! (bundled webpki roots plus an optional extra CA) and the server config of the
//! proxy listener. Both use rustls with the ring provider, passed explicitly so
//! nothing depends on a process-wide default.

pub mod pki;

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::ListenTls;

/// A problem building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("upstream.ca_file: certificate rejected: {source}")]
    BadCa {
        #[source]
        source: rustls::Error,
    },
    #[error("listen_tls: certificate and key do not make a usable TLS identity: {source}")]
    BadIdentity {
        #[source]
        source: rustls::Error,
    },
    #[error("TLS protocol versions unavailable: {source}")]
    Versions {
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client TLS config for the upstream: bundled roots plus `extra_roots`.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|source| TlsError::BadCa { source })?;
    }
    // ALPN is set by the connector builder (HTTP/1.1 only, so request targets
    // reach SmartLead exactly as the client wrote them).
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Versions { source })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The server TLS config for the proxy listener.
pub fn server_config(tls: &ListenTls) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Versions { source })?
        .with_no_client_auth()
        .with_single_cert(tls.certs.clone(), tls.key.clone_key())
        .map_err(|source| TlsError::BadIdentity { source })?;
    // The listener speaks HTTP/1.1 only: offering h2 would have clients
    // such as curl speak a protocol it does not answer.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
