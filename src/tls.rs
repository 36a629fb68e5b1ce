//! TLS for both directions: the client config used to reach an HTTPS upstream
//! (bundled webpki roots plus an optional extra CA) and the server config of the
//! proxy listener. Both use rustls with the ring provider, passed explicitly so
//! nothing depends on a process-wide default.

pub mod pki;

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ListenTls, TlsIdentity};

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

/// The server TLS config for the proxy listener: each certificate is
/// served to the clients that ask for one of its names (SNI), the first to
/// clients that ask for none; a client asking for another name gets a TLS
/// alert (`access_denied`), never a certificate it would reject.
pub fn server_config(tls: &ListenTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut identities = Vec::with_capacity(tls.identities.len());
    for identity in &tls.identities {
        let key =
            CertifiedKey::from_der(identity.certs.clone(), identity.key.clone_key(), &provider)
                .map_err(|source| TlsError::BadIdentity { source })?;
        identities.push((identity_names(identity), Arc::new(key)));
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Versions { source })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { identities }));
    // The listener speaks HTTP/1.1 only: offering h2 would have clients
    // such as curl speak a protocol it does not answer.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The DNS names one certificate of the listener answers for.
fn identity_names(identity: &TlsIdentity) -> Vec<String> {
    identity
        .certs
        .first()
        .map(pki::certificate_names)
        .unwrap_or_default()
}

/// Every name the listener answers for, over all its certificates.
pub fn served_names(tls: &ListenTls) -> Vec<String> {
    tls.identities.iter().flat_map(identity_names).collect()
}

/// Chooses the certificate by the name the client asked for.
#[derive(Debug)]
struct BySni {
    /// Each certificate with its DNS names, the default first.
    identities: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(asked) = hello.server_name() else {
            return self.identities.first().map(|(_, key)| key.clone());
        };
        let found = self
            .identities
            .iter()
            .find(|(names, _)| names.iter().any(|n| name_matches(n, asked)))
            .map(|(_, key)| key.clone());
        if found.is_none() {
            let served: Vec<&str> = self
                .identities
                .iter()
                .flat_map(|(names, _)| names.iter().map(String::as_str))
                .collect();
            tracing::info!(
                asked,
                served = %served.join(", "),
                "TLS: a client asked for a name no certificate of [listen_tls] has; refused with an alert"
            );
        }
        found
    }
}

/// Whether a certificate name (possibly `*.example.com`) covers `asked`.
pub fn name_matches(name: &str, asked: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => asked
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => name.eq_ignore_ascii_case(asked),
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn names_match_exactly_or_by_one_wildcard_label() {
        assert!(name_matches("server.smartlead.ai", "SERVER.smartlead.ai"));
        assert!(name_matches("*.example.com", "gw.example.com"));
        assert!(!name_matches("*.example.com", "a.gw.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("server.smartlead.ai", "smartlead.ai"));
    }
}
