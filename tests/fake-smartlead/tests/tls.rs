//! HTTPS mode: with a rustls `ServerConfig` the fake serves TLS on
//! `https://localhost:PORT`, and a client trusting the certificate gets answers.

mod common;

use std::sync::Arc;

use common::{build, exchange, KEY};
use fake_smartlead::{start, FakeConfig};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test]
async fn tls_mode_serves_https_for_localhost() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let h = start(FakeConfig {
        tls: Some(Arc::new(server)),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(h.url(), format!("https://localhost:{}", h.addr().port()));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    let target = format!("/api/v1/campaigns/101?api_key={KEY}");
    let r = exchange(&mut tls, &build("GET", &target, &[], b""), false)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "Cold Outreach Q1");
    let r = exchange(
        &mut tls,
        &build(
            "GET",
            &format!("/api/v1/campaigns/101/leads-export?api_key={KEY}"),
            &[],
            b"",
        ),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.body, h.expected_leads_csv(101));
    assert_eq!(h.requests()[0].target, target);
    h.shutdown().await;
}
