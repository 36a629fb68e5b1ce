//! TLS to PostgreSQL: `sslmode=verify-full&sslrootcert=CA.pem` verifies the
//! server's certificate and name, as against a managed database. The
//! server here is the test server behind a TLS relay with a certificate
//! for `localhost` from a test CA. Skipped (saying so) without
//! `SAFEDELETE_TEST_POSTGRES_URL`.

mod common;

use std::process::Command;

use common::process::*;
use common::*;
use fake_smartlead::FakeConfig;
use http::Request;
use http_body_util::Full;

fn server_config(pki: &TestPki) -> std::sync::Arc<rustls::ServerConfig> {
    let mut config = (*pki.server_config()).clone();
    config.alpn_protocols.clear();
    std::sync::Arc::new(config)
}

fn with_tls(url: &str, ca: &std::path::Path) -> String {
    format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_verifies_the_databases_certificate_and_works_over_tls() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let pki = TestPki::new();
    let relay = postgres::TlsRelay::start(&db, server_config(&pki)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let url = with_tls(&relay.url(&db, "localhost"), &ca);

    let up = fake_smartlead::start(FakeConfig::default()).await.unwrap();
    let config = dir.path().join("gw.toml");
    let text = config_text_for(&up.url(), &format!("url = {url:?}"), Extra::default());
    std::fs::write(&config, text).unwrap();
    let mut gw = Proc::start(&config, "info");
    let reply = send(
        Request::delete(gw.url(&format!("/api/v1/campaigns/101?api_key={KEY}")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(gw.terminate().success());
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("SAFEDELETE_DATABASE", &url)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("OK: 1 chained records verified"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_or_for_another_name_is_refused() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, &TestPki::new().ca_pem).unwrap();
    let pki = TestPki::new();
    let relay = postgres::TlsRelay::start(&db, server_config(&pki)).await;
    // The right CA, a certificate for another name.
    let elsewhere = TestPki::for_names(&["db.internal"]);
    let misnamed = postgres::TlsRelay::start(&db, server_config(&elsewhere)).await;
    let its_ca = dir.path().join("its-ca.pem");
    std::fs::write(&its_ca, &elsewhere.ca_pem).unwrap();
    for (url, why) in [
        (with_tls(&relay.url(&db, "localhost"), &other), "another CA"),
        (
            with_tls(&misnamed.url(&db, "localhost"), &its_ca),
            "another name",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["audit"])
            .env("SAFEDELETE_DATABASE", &url)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{why}: accepted");
        let err = stderr(&out);
        assert!(err.contains("cannot open the database"), "{why}: {err}");
        assert!(err.to_lowercase().contains("certificate"), "{why}: {err}");
    }
}
