//! TLS in both directions: an HTTPS upstream verified against an extra CA,
//! and TLS on the proxy listener (clients send their key in the query string).

mod common;

use common::*;
use http::Request;
use http_body_util::Full;

async fn tls_fake(pki: &TestPki) -> fake_smartlead::FakeHandle {
    fake_smartlead::start(fake_smartlead::FakeConfig {
        tls: Some(pki.server_config()),
        ..fake_smartlead::FakeConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn an_https_upstream_is_trusted_through_the_extra_ca_file() {
    let pki = TestPki::new();
    let up = tls_fake(&pki).await;
    assert!(up.url().starts_with("https://localhost:"));
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let upstream_extra = format!("ca_file = {:?}\n", ca.display().to_string());
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            upstream: &upstream_extra,
            ..Extra::default()
        },
    )
    .await;
    let reply = get(&gw.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["id"], 101);
    let r = &up.requests()[0];
    assert_eq!(r.target, "/api/v1/campaigns/101?api_key=sl_test_key");
    assert_eq!(
        r.header("host"),
        Some(format!("localhost:{}", up.addr().port()).as_bytes())
    );
}

#[tokio::test]
async fn an_https_upstream_with_an_unknown_ca_is_refused() {
    let pki = TestPki::new();
    let up = tls_fake(&pki).await;
    let gw = Gateway::start(&up.url()).await;
    let reply = get(&gw.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error_kind"], "upstream_connect_failed");
    assert!(
        up.requests().is_empty(),
        "nothing may be sent over an unverified connection"
    );
}

#[tokio::test]
async fn the_proxy_listener_can_serve_tls() {
    let pki = TestPki::new();
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = pki.write(dir.path());
    let tables = format!(
        "[listen_tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    let url = format!(
        "https://localhost:{}/api/v1/campaigns/102?api_key=sl_test_key",
        gw.proxy.port()
    );
    let resp = pki
        .client()
        .request(Request::get(url).body(Full::default()).unwrap())
        .await
        .expect("TLS request through the gateway");
    let reply = collect(resp).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], 102);
    assert_eq!(
        up.requests()[0].header("x-forwarded-proto"),
        Some(&b"https"[..])
    );

    // Plain HTTP on the TLS port gets no HTTP answer, and the listener survives.
    let answer = raw(gw.proxy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!answer.starts_with("HTTP/1.1 200"));
    let again = pki
        .client()
        .request(
            Request::get(format!(
                "https://localhost:{}/api/v1/campaigns?api_key=sl_test_key",
                gw.proxy.port()
            ))
            .body(Full::default())
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

/// Clients that offer HTTP/2 (curl, Go, Node's fetch) are told HTTP/1.1,
/// the only protocol the listener answers: offering h2 had curl fail.
#[tokio::test]
async fn the_proxy_listener_negotiates_http1_with_clients_that_offer_h2() {
    let pki = TestPki::new();
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = pki.write(dir.path());
    let tables = format!(
        "[listen_tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}
